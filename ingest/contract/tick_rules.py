"""What a tick entry must meet to be read, and what becomes of one that does not: the rules, the rejected
inputs with their reasons, and the fields both entry forms share (`clock`, `producer`, `seq`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tickerdash.ingest.contract.fields import RawEntry, as_text
from tickerdash.ingest.field_rules import MAX_TS_MS, TickError, TimeWindow
from tickerdash.ingest.settings import Settings
from tickerdash.ingest.ticks import TickBatch

__all__ = ["RawEntry", "as_text"]  # re-exported: readers of tick entries find them here too

BATCH_FORMAT = b"arrow-ipc/1"
CLOCK_FIELD = "clock"
# optional fields of either form: the writing producer's id and its sequence number for the entry, which
# let a producer find out after a lost connection which of its entries landed; consumers ignore them
PRODUCER_FIELD = "producer"
SEQ_FIELD = "seq"
# Per-tick field values longer than this are refused before parsing: fixed-width numpy byte arrays of the
# columns would otherwise take (longest value x entries) bytes, gigabytes for one megabyte-long value.
MAX_FIELD_BYTES = 256


@dataclass(frozen=True, slots=True)
class DecodeRules:
    """What an entry must meet beyond the field rules: the event-time window and the size of a batch entry.

    `window` None (the default of `decode_entries`) checks no event-time window; readers of the tick streams
    pass `decode_rules(settings)`, so that every reader refuses the same trades.
    """

    window: TimeWindow | None = None
    trust_declared_clock: bool = True
    max_entry_rows: int | None = None


def decode_rules(settings: Settings) -> DecodeRules:
    """The decoding rules the settings ask for (TICKERDASH_TICK_TS_*, TICKERDASH_MAX_ENTRY_ROWS)."""
    behind = settings.tick_ts_max_behind_s
    window = TimeWindow(
        earliest_ms=settings.tick_ts_earliest_ms,
        max_ahead_ms=int(settings.tick_ts_max_ahead_s * 1000),
        max_behind_ms=None if behind is None else int(behind * 1000),
    )
    return DecodeRules(window, settings.trust_declared_clock, settings.max_entry_rows)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that broke the rules: what it was, where it came from, and why."""

    entry_id: str
    fields: dict[str, bytes | str]
    reason: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """The valid trades of some stream entries, plus every rejected input with its reason."""

    ticks: TickBatch
    rejected: list[Rejected]


def text_fields_of(fields: dict[bytes, bytes]) -> dict[str, bytes | str]:
    return {k.decode(errors="replace"): v for k, v in fields.items()}


def entry_fields(flat: Sequence[bytes] | None) -> dict[str, bytes | str]:
    """A raw entry's fields by name, as a dead letter keeps them (empty for an entry trimmed while pending)."""
    return text_fields_of(dict(zip(flat[0::2], flat[1::2], strict=False))) if flat else {}


def entry_clock_ms(entry_id: bytes | str) -> int:
    """The time part of a stream entry ID, in epoch ms (capped where ts stops being valid anyway)."""
    return min(int(as_text(entry_id).partition("-")[0]), MAX_TS_MS)


def declared_clock(raw: bytes | None, entry_id: bytes) -> int:
    """The event clock an entry declares (epoch ms), or its ID's time when it declares none."""
    if raw is None:
        return entry_clock_ms(entry_id)
    try:
        clock = int(raw)
    except ValueError:
        raise TickError(f"clock: {raw[:40]!r} must be the producer's event clock in epoch ms") from None
    if not 0 <= clock < MAX_TS_MS:
        raise TickError("clock: must be epoch milliseconds in [0, 2^42)")
    return clock
