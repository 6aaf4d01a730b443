"""Account ids as stable integer codes, so the features' state and checkpoints never hold the strings."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

NO_ACCOUNT = 0  # the code of a missing account: never matches anything

_CODE_CACHE: dict[str, int] = {}


def account_code(name: str) -> int:
    """A stable nonzero 63-bit code of an account id (so state and checkpoints never hold the strings)."""
    code = _CODE_CACHE.get(name)
    if code is None:
        code = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1 or 1
        if len(_CODE_CACHE) > 200_000:  # bounded: a long tail of accounts must not grow memory forever
            _CODE_CACHE.clear()
        _CODE_CACHE[name] = code
    return code


def account_codes(column: pa.Array | None, n: int) -> np.ndarray:
    """int64 code of every row's account (NO_ACCOUNT where missing); hashes each distinct name once."""
    if column is None:
        return np.zeros(n, np.int64)
    encoded = column.dictionary_encode()
    names = encoded.dictionary.to_pylist()
    codes = list(map(_CODE_CACHE.get, names))  # a batch's accounts are mostly known: one C-level pass
    if None in codes:
        codes = [account_code(name) if code is None else code for name, code in zip(names, codes, strict=True)]
    table = np.array([*codes, NO_ACCOUNT], np.int64)
    indices = encoded.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)
    return table[indices]
