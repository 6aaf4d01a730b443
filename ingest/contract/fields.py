"""What every entry codec shares: Redis reply values as text, and an entry's fields by name."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

RawEntry = tuple[bytes, Sequence[bytes]]  # (entry id, flat [field, value, field, value, ...])
# an entry's fields as a client returns them: a mapping (redis-py's parsed replies) or a flat list (raw replies)
EntryFields = Mapping[Any, Any] | Sequence[Any]


def as_text(value: bytes | str) -> str:
    """A Redis reply value as str (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else value


def field_map(fields: EntryFields) -> Mapping[Any, Any]:
    """An entry's fields as a mapping, whichever form the client returned them in."""
    if isinstance(fields, Mapping):
        return fields
    return dict(zip(fields[0::2], fields[1::2], strict=False))


def text_fields(fields: EntryFields) -> dict[str, str]:
    """An entry's fields by name, names and values as text."""
    return {as_text(k): as_text(v) for k, v in field_map(fields).items()}


def entry_ms(entry_id: bytes | str) -> int:
    """The time part of a stream entry ID, in epoch ms."""
    return int(as_text(entry_id).partition("-")[0])


def id_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry ID as (ms, seq), which orders IDs as Redis does."""
    ms, _, seq = as_text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def fields_json(fields: Mapping[str, str]) -> str:
    """An entry's fields as a JSON array [field, value, ...]: the form a script appends many entries from."""
    return json.dumps([x for pair in fields.items() for x in pair])


def typed_event(entry_id: str, fields: EntryFields, numbers: Mapping[str, type]) -> dict[str, Any]:
    """An entry as plain data for a reader that shows it: `id` plus its fields, the numeric ones parsed.

    A numeric field that does not parse keeps its text: a page shows what was written rather than nothing.
    """
    event: dict[str, Any] = {"id": entry_id}
    for raw_key, raw_value in field_map(fields).items():
        key, value = as_text(raw_key), as_text(raw_value)
        kind = numbers.get(key)
        if kind is not None:
            try:
                event[key] = kind(float(value)) if kind is int else kind(value)
                continue
            except ValueError:
                pass
        event[key] = value
    return event
