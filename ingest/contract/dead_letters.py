"""Dead-letter entries of `<prefix>:deadletter`: a rejected input's original fields plus why, whence and which.

`reason` (readable; the text before its first `:` names the field or rule broken), `source` (the
command or worker that refused it) and `entry_id` (the refused stream entry or tick id, or the input's
place, such as `line:3`). These three are written last, so they win over an original field of that name.
"""

from __future__ import annotations

from collections.abc import Mapping

from tickerdash.ingest.contract.fields import EntryFields, field_map

DEADLETTER_FIELDS = ("reason", "source", "entry_id")


def encode_dead_letter(
    original: Mapping[str, bytes | str], reason: str, source: str, entry_id: str
) -> dict[str, bytes | str]:
    """One dead-letter entry's fields."""
    fields: dict[str, bytes | str] = dict(original)
    fields["reason"] = reason
    fields["source"] = source
    fields["entry_id"] = entry_id
    return fields


def dead_letter_reason(fields: EntryFields | None) -> str:
    """A dead-letter entry's reason ('?' when it has none, or the entry was trimmed)."""
    mapping = field_map(fields) if fields else {}
    raw = mapping.get(b"reason", mapping.get("reason", "?"))
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
