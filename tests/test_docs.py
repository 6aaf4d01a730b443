"""The documents stay true to the tree: the files they cite exist, docs/design.md documents every key and
field of the wire contract, and nothing cites a contract page that is not in the repository."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import os
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import tickerdash.ingest.contract as contract
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.contract.tick_entries import encode_batch, encode_ticks
from tickerdash.ingest.field_rules import OPTIONAL_TEXT_FIELDS
from tickerdash.ingest.ticks import TickBatch

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PRODUCTION = ("ingest", "simulator", "analytics", "dashboard", "tickerdash")
NOT_THE_TREE = {".git", ".venv", "build", "tickerdash.egg-info", "node_modules", ".mypy_cache", ".ruff_cache"}


def _prose(markdown: str) -> str:
    """Markdown without its fenced code blocks (commands and diagrams there are not citations)."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)


def _spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def _top_level() -> set[str]:
    return {p.name for p in ROOT.iterdir()} - NOT_THE_TREE


def cited_paths(markdown: str, folder: Path) -> Iterator[str]:
    """Repository paths a document in `folder` cites, relative to the root: backticked paths that start at
    a top-level entry of the tree (or name a .md/.py/.toml file), and relative Markdown links."""
    text = _prose(markdown)
    top = _top_level()
    for span in _spans(text):
        token = span.strip().split("::", 1)[0]  # `tests/test_x.py::test_name` cites the file
        if re.search(r"[\s<>{}$=|'\"]|://|^~", token):
            continue
        if "/" in token:
            if token.split("/", 1)[0] in top:
                yield token
        elif re.fullmatch(r"[\w.-]+\.(md|py|toml)", token):
            yield token
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        target = target.split("#", 1)[0]
        if target and not re.match(r"[a-z]+:", target):
            yield (folder / target).resolve().relative_to(ROOT).as_posix()


@functools.cache
def _tree_files() -> tuple[Path, ...]:
    """Every file of the tree (not of the virtualenv, caches or build output)."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = sorted(d for d in subfolders if d not in NOT_THE_TREE and d != "__pycache__")
        found += [Path(folder) / name for name in sorted(files)]
    return tuple(found)


def _exists(path: str) -> bool:
    if "*" in path:
        return any(ROOT.glob(path))
    if "/" not in path and not (ROOT / path).exists():  # a bare file name: somewhere in the tree
        return any(p.name == path for p in _tree_files())
    return (ROOT / path).exists()


class TestCitedFiles:
    def test_every_cited_file_exists(self) -> None:
        """Every repository path that README.md and docs/*.md cite exists in the tree."""
        cited = {
            (doc.relative_to(ROOT).as_posix(), path)
            for doc in DOCUMENTS
            for path in cited_paths(doc.read_text(), doc.parent)
        }
        assert len(cited) > 20, "the citation finder found almost nothing: is its pattern still right?"
        missing = sorted(f"{doc}: {path}" for doc, path in cited if not _exists(path))
        assert not missing, "cited but not in the tree:\n" + "\n".join(missing)

    def test_the_finder_sees_backticked_paths_and_links(self) -> None:
        """Backticked repository paths and relative links count as citations; commands and URLs do not."""
        markdown = (
            "See `analytics/engine/worker.py`, [export](export.md), `README.md`, `redis://host:6379`,\n"
            "`tickerdash up`, [site](https://example.org), `tests/test_bars.py::test_x` and `../shared/data`.\n"
            "```\n`ingest/nothing.py`\n```\n"
        )
        found = set(cited_paths(markdown, ROOT / "docs"))
        assert found == {"analytics/engine/worker.py", "docs/export.md", "README.md", "tests/test_bars.py"}


def _documented() -> set[str]:
    """Backticked names in docs/design.md, with every placeholder (`<x>`, `{x}`) as `*`, lower case."""
    return {_placeholders(span) for span in _spans(DESIGN.read_text())}


def _placeholders(name: str) -> str:
    return re.sub(r"<[^>]*>", "*", re.sub(r"\{[^}]*\}", "*", name.lower()))


def _key_builders() -> Iterator[tuple[str, str]]:
    """(member, key) for every key name `Keys` builds, at one partition and at several, placeholders for
    its arguments."""
    for keys in (Keys("tickerdash", 1), Keys("tickerdash", 4)):
        for name, member in inspect.getmembers(type(keys)):
            if name.startswith("_"):
                continue
            if isinstance(member, property):
                value = getattr(keys, name)
            elif inspect.isfunction(member):
                params = list(inspect.signature(member).parameters.values())[1:]
                if any(p.kind is p.VAR_POSITIONAL for p in params):
                    continue
                value = member(keys, *(f"<{p.name}>" for p in params))
            else:
                continue
            if isinstance(value, str) and value.startswith("tickerdash:"):
                yield name, value


def _internal_keys() -> Iterator[tuple[str, str]]:
    """(where, key) for every `.internal("name", ...)` and `._partition_internal(partition, "name", ...)` call in
    the production code (the latter in its tagged form, `{*}` for the partition); arguments that are not literals
    become placeholders."""
    for folder in PRODUCTION:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr == "internal":
                    args, tag = node.args, []
                elif node.func.attr == "_partition_internal":
                    args, tag = node.args[1:], ["{*}"]
                else:
                    continue
                if not args or not (isinstance(args[0], ast.Constant) and isinstance(args[0].value, str)):
                    continue
                parts = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else "*" for a in args]
                yield f"{path.relative_to(ROOT)}:{node.lineno}", ":".join(("tickerdash", "_", *tag, *parts))


def _contract_fields() -> Iterator[tuple[str, str]]:
    """(where, field) for every field the contract package names: its `*_FIELD` and `*FIELDS` constants,
    and the fields and Arrow columns the tick codecs write."""
    for info in pkgutil.iter_modules(contract.__path__):
        module = importlib.import_module(f"{contract.__name__}.{info.name}")
        for name, value in vars(module).items():
            if not name.isupper():
                continue
            if name.endswith("_FIELD") and isinstance(value, str):
                yield f"{info.name}.{name}", value
            elif name.endswith("FIELDS") and isinstance(value, tuple | list | frozenset | set):
                yield from ((f"{info.name}.{name}", v) for v in value if isinstance(v, str))
    full = TickBatch.from_columns(["AAPL"], [1.0], [1.0], [1_764_150_000_000], [1], ["t1"], ["b1"], ["s1"])
    yield from (("encode_batch", name) for name in encode_batch(full, clock_ms=1))
    yield from (("encode_ticks", name) for fields in encode_ticks(full, clock_ms=1) for name in fields)
    yield from (("TickBatch.to_arrow", name) for name in full.to_arrow().schema.names)
    yield from (("ticks.OPTIONAL_TEXT_FIELDS", name) for name in OPTIONAL_TEXT_FIELDS)


class TestDesignDocumentsTheContract:
    def test_every_key_name_is_documented(self) -> None:
        """Every key `Keys` builds appears, in backticks, in docs/design.md."""
        built = list(_key_builders())
        assert len(built) >= 8
        documented = _documented()
        missing = sorted({f"Keys.{name}: {key}" for name, key in built if _placeholders(key) not in documented})
        assert not missing, "keys missing from docs/design.md:\n" + "\n".join(missing)

    def test_every_internal_key_is_documented(self) -> None:
        """Every internal key the code names (`<prefix>:_:...`) appears in docs/design.md's internal keys."""
        found = list(_internal_keys())
        assert len(found) >= 8
        documented = _documented()
        missing = sorted(f"{where}: {key}" for where, key in found if _placeholders(key) not in documented)
        assert not missing, "internal keys missing from docs/design.md:\n" + "\n".join(missing)

    def test_every_field_is_documented(self) -> None:
        """Every field name the contract package defines or writes appears, in backticks, in docs/design.md."""
        fields = list(_contract_fields())
        assert len(fields) >= 12
        documented = {span.strip() for span in _spans(DESIGN.read_text())}
        missing = sorted({f"{where}: {name}" for where, name in fields if name not in documented})
        assert not missing, "fields missing from docs/design.md:\n" + "\n".join(missing)


BINARY = {".png", ".jpg", ".parquet", ".pyc", ".ico", ".gz", ".zip"}


def _text_files() -> Iterator[Path]:
    yield from (path for path in _tree_files() if path.suffix.lower() not in BINARY)


OUTSIDE_PAGE = "DESIGN" + ".md"  # spelt in two pieces so that this file does not cite it


def test_nothing_cites_the_outside_contract_page() -> None:
    """No file in the repository cites the contract page outside the tree; they cite docs/design.md."""
    citing = []
    for path in _text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        citing += [
            f"{path.relative_to(ROOT)}:{number}"
            for number, line in enumerate(text.splitlines(), 1)
            if OUTSIDE_PAGE in line
        ]
    assert not citing, "cite docs/design.md instead:\n" + "\n".join(citing)
