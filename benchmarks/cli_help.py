"""Start-up cost of the command line: `tickerdash PATH --help` for every command and sub-command, each in a
fresh interpreter (`python -m tickerdash`), beside the reference of the same run: `python -c pass`, the
interpreter alone. No Redis.

    python -m benchmarks.cli_help [--runs N] [--ref REF]

`--ref` times a second checkout's interpreter too (a worktree's `.venv/bin/python`), alternating with this
one, so that two versions are compared within one run.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer

from tickerdash.commands import app


def command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of this command and of every command below it, depth first (typer's groups have `commands`)."""
    below = getattr(command, "commands", {}).values()
    return [path, *(p for sub in below for p in command_paths(sub, (*path, sub.name or "")))]


def seconds(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `argv` to its exit (which must be 0)."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    # not in a checkout: `python -m` puts the current directory first on sys.path, where a checkout's
    # `tickerdash/` would be imported instead of the interpreter's own
    subprocess.run(argv, check=True, capture_output=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - started, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_seconds(argv: list[str], runs: int) -> tuple[float, float]:
    """The medians of wall and CPU seconds of `runs` runs (after one warm-up run, so that every run finds the
    files in the page cache). CPU time is the steadier figure on a shared machine."""
    seconds(argv)
    taken = [seconds(argv) for _ in range(runs)]
    return statistics.median(wall for wall, _ in taken), statistics.median(cpu for _, cpu in taken)


def main() -> None:
    """Time `--help` of every command path; print a table in milliseconds."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per command (the median is shown)")
    parser.add_argument("--ref", help="another interpreter to time alongside, e.g. ../main/.venv/bin/python")
    args = parser.parse_args()
    pythons = {"this": sys.executable, **({"ref": args.ref} if args.ref else {})}
    paths = command_paths(typer.main.get_command(app))
    print(f"median of {args.runs} runs, ms (this: {sys.executable}{'; ref: ' + args.ref if args.ref else ''})")
    print(f"{'command':<36}" + "".join(f"{name + ' wall':>11}{name + ' cpu':>11}" for name in pythons))
    rows = [("python -c pass (reference)", ["-c", "pass"])]
    rows += [(" ".join(("tickerdash", *path, "--help")), ["-m", "tickerdash", *path, "--help"]) for path in paths]
    worst = {name: [0.0, 0.0] for name in pythons}
    for label, argv in rows:
        cells = []
        for name, python in pythons.items():  # alternating: a busy spell of the machine hits both
            wall, cpu = median_seconds([python, *argv], args.runs)
            if argv[0] == "-m":
                worst[name] = [max(worst[name][0], wall), max(worst[name][1], cpu)]
            cells.append(f"{wall * 1000:>11.0f}{cpu * 1000:>11.0f}")
        print(f"{label:<36}" + "".join(cells))
    print(f"{'slowest --help':<36}" + "".join(f"{w * 1000:>11.0f}{c * 1000:>11.0f}" for w, c in worst.values()))


if __name__ == "__main__":
    main()
