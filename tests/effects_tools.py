"""Reading a batch's `Effects` in tests: what its outputs would write, decoded."""

from __future__ import annotations

import json

from tickerdash.analytics.engine.stage import AppendMany, Effects


def entries_json(effects: Effects, name: str) -> list[str]:
    """The entries the outputs named `name` (AppendMany) would append, as JSON arrays [field, value, ...]."""
    out: list[str] = []
    for output in effects.written(name):
        assert isinstance(output, AppendMany)
        out.extend(output.encode())
    return out


def entries(effects: Effects, name: str) -> list[dict[str, str]]:
    """The entries the outputs named `name` would append, each as a dict of its fields."""
    decoded = [json.loads(entry) for entry in entries_json(effects, name)]
    return [dict(zip(flat[::2], flat[1::2], strict=True)) for flat in decoded]
