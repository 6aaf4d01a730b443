"""The installed shape of the project: one import package, `tickerdash`, and imports that point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FLOORS = ("ingest", "simulator", "analytics", "dashboard")  # ground floor first
FRONT_DOOR = "tickerdash"


def folder_of(package: str) -> Path:
    """The source folder of an installed package name, through pyproject's package-dir mapping."""
    mapping: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in mapping:
            return ROOT / mapping[head] / Path(*parts[cut:])
    raise AssertionError(f"{package} is under no package-dir mapping")


def source_packages() -> set[str]:
    """Every folder with an __init__.py under the mapped folders, as its installed package name."""
    found = set()
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join((package, *relative.parts)))
    return found


def module_name(path: Path) -> str:
    """The installed module name of a source file."""
    relative = path.relative_to(ROOT)
    floor = relative.parts[0]
    prefix = FRONT_DOOR if floor == FRONT_DOOR else f"{FRONT_DOOR}.{floor}"
    rest = [part for part in relative.with_suffix("").parts[1:] if part != "__init__"]
    return ".".join((prefix, *rest))


def floor_of(module: str) -> str:
    """`tickerdash.analytics.engine.worker` -> `analytics`; the front door's own modules -> `tickerdash`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FLOORS else FRONT_DOOR


def imported_modules(path: Path) -> set[str]:
    """The project modules a source file imports (absolute imports only: the project uses no others)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name == FRONT_DOOR or name.startswith(FRONT_DOOR + ".")}


def source_files() -> list[Path]:
    """Every production source file."""
    return sorted(path for floor in (*FLOORS, FRONT_DOOR) for path in (ROOT / floor).rglob("*.py"))


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """setuptools installs exactly the listed packages: a new folder missing from the list would not install."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert source_packages() == listed


def test_no_folder_imports_the_floors_above_it() -> None:
    """tickerdash (front door) -> dashboard -> analytics -> simulator -> ingest: no import runs back up."""
    rank = {floor: k for k, floor in enumerate(FLOORS)}
    rank[FRONT_DOOR] = len(FLOORS)
    front_door_modules = {module_name(path) for path in (ROOT / FRONT_DOOR).rglob("*.py")} - {FRONT_DOOR}
    wrong = []
    for path in source_files():
        mine = floor_of(module_name(path))
        for imported in imported_modules(path):
            if imported in front_door_modules and mine != FRONT_DOOR:
                wrong.append(f"{path.relative_to(ROOT)} imports the front door's {imported}")
            elif rank[floor_of(imported)] > rank[mine]:
                wrong.append(f"{path.relative_to(ROOT)} ({mine}) imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_floors_import_only_through_the_namespace() -> None:
    """No module imports a floor by its folder name (`import analytics`): installed, only `tickerdash` exists."""
    wrong = []
    for path in source_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            wrong += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in FLOORS]
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_import_package(tmp_path: Path) -> None:
    """`pip install .` puts one import package, tickerdash, into site-packages (with the page's assets)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("tickerdash-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"tickerdash"}
    assert "tickerdash/dashboard/assets/tickerdash-00-core.js" in names
    installed = {name.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for name in names}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) <= installed
