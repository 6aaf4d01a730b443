"""NDJSON blocks: Arrow reads a block of lines at once; a block it cannot read whole goes line by line."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from tickerdash.ingest.contract.tick_entries import Rejected
from tickerdash.ingest.importers.blocks import MAX_REJECTED_TEXT, RawChunk


def ndjson_rows(block: bytes, lines: np.ndarray, blank: np.ndarray, wanted: Sequence[str]) -> RawChunk:
    """The rows of one block of whole lines (numbered `lines`): Arrow's reading, or line by line if it cannot."""
    row_lines = lines[~blank]
    try:
        table = pa_json.read_json(io.BytesIO(block), read_options=pa_json.ReadOptions(use_threads=False))
        if table.num_rows != len(row_lines):
            raise ValueError("rows do not match lines")
    except (pa.ArrowInvalid, ValueError):
        return _ndjson_line_by_line(block, lines, blank, wanted)
    columns = {
        c: table.column(c).combine_chunks() if c in table.column_names else pa.nulls(table.num_rows, pa.string())
        for c in wanted
    }
    return RawChunk(pa.table(columns), row_lines, [])


def _ndjson_line_by_line(block: bytes, lines: np.ndarray, blank: np.ndarray, wanted: Sequence[str]) -> RawChunk:
    """Slow path for a block Arrow cannot read whole: bad lines rejected, every value as text."""
    values: dict[str, list[str | None]] = {c: [] for c in wanted}
    kept: list[int] = []
    rejected: list[Rejected] = []
    for number, is_blank, text in zip(lines.tolist(), blank.tolist(), block.split(b"\n"), strict=False):
        if is_blank:
            continue
        try:
            record = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict):
            line: dict[str, bytes | str] = {"line": text[:MAX_REJECTED_TEXT]}
            rejected.append(Rejected(f"line:{number}", line, "json: not a JSON object"))
            continue
        kept.append(number)
        for c in wanted:
            value = record.get(c)
            values[c].append(None if value is None else value if isinstance(value, str) else json.dumps(value))
    table = pa.table({c: pa.array(v, pa.string()) for c, v in values.items()})
    return RawChunk(table, np.array(kept, np.int64), rejected)
