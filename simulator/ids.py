"""Trade and episode ids as Arrow string arrays, built for a whole chunk at once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def string_ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    """`prefix` + decimal number, for a whole array at once."""
    digits = pc.cast(pa.array(numbers, pa.int64()), pa.string())
    return pc.binary_join_element_wise(prefix, digits, "")


_FOUR_DIGITS = np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(), np.uint8).reshape(10_000, 4)


def consecutive_ids(prefix: str, first: int, count: int) -> pa.Array:
    """Ids `prefix` + str(first + i) for i < count, built from byte tables: the hot path of trade ids.

    Within a run of 10,000 consecutive numbers only the last four digits change, so each run is one
    head (formatted once) next to a slice of the four-digit table.
    """
    if first < 10_000:  # short numbers have no head; Arrow's own formatting handles the first few
        return string_ids(prefix, np.arange(first, first + count, dtype=np.int64))
    blocks, offsets, position = [], [np.zeros(1, np.int32)], 0
    number, end = first, first + count
    while number < end:
        head_value, low = divmod(number, 10_000)
        run = min(10_000 - low, end - number)
        head = np.frombuffer(f"{prefix}{head_value}".encode(), np.uint8)
        block = np.empty((run, len(head) + 4), np.uint8)
        block[:, : len(head)] = head
        block[:, len(head) :] = _FOUR_DIGITS[low : low + run]
        blocks.append(block.reshape(-1))
        offsets.append(position + np.arange(1, run + 1, dtype=np.int32) * block.shape[1])
        position += block.size
        number += run
    data = np.concatenate(blocks) if blocks else np.zeros(0, np.uint8)
    return pa.StringArray.from_buffers(count, pa.py_buffer(np.concatenate(offsets)), pa.py_buffer(data))
