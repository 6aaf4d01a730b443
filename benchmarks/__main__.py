"""Every worker benchmark at a size that fits in about 10 minutes, and one table of their figures.

    python -m benchmarks [--quick]

Runs `benchmarks.analytics`, `benchmarks.alerts` and `benchmarks.anomaly` in turn (each prints its own
lines, with the redis-benchmark reference of its own run), then prints one table: figure, value, the
reference it is judged against (redis-benchmark XADD of the same run, or the rate a ratio target names),
the ratio, the target and whether it holds. Each benchmark stays runnable alone with its own `--help` and
larger default sizes. `--quick` shrinks everything (a smoke test of the suite, not figures to quote).
"""

from __future__ import annotations

import argparse
import time

from benchmarks import alerts, analytics, anomaly
from benchmarks._common import Figure

# (module, its arguments in the suite): sizes chosen so the suite fits in ~10 minutes on a slow 2-core host
SUITE = (
    (
        analytics,
        ["--batch-ticks", "1000000", "--per-tick-ticks", "116174", "--latency-seconds", "10", "--rss-ticks", "1000000"],
    ),
    (alerts, ["--ticks", "0", "--worker-ticks", "500000", "--rounds", "3", "--latency-seconds", "10"]),
    (anomaly, ["--ticks", "200000", "--worker-ticks", "500000", "--pairs", "3"]),
)
QUICK = (
    (
        analytics,
        [
            "--batch-ticks",
            "100000",
            "--per-tick-ticks",
            "20000",
            "--per-tick-rounds",
            "1",
            "--latency-seconds",
            "3",
            "--rss-ticks",
            "0",
        ],
    ),
    (alerts, ["--ticks", "0", "--worker-ticks", "60000", "--rounds", "1", "--latency-seconds", "3"]),
    (anomaly, ["--ticks", "30000", "--worker-ticks", "60000", "--pairs", "1"]),
)
FOOTNOTE = (
    "Not run here: `python -m benchmarks.page_latency` (needs a browser, 30 s), and the benchmarks of the other\n"
    "parts (ingest, simulate, analytics_core, export, import_csv, hostile_entry, soak): each with its own --help."
)


def table(figures: list[Figure]) -> str:
    """The figures as a Markdown table: figure, value, reference, ratio, target, held."""
    lines = [
        "| figure | value | reference | ratio | target | held |",
        "|---|---:|---:|---:|---|---|",
    ]
    for figure in figures:
        unit = f" {figure.unit}"
        reference = f"{figure.reference:,.0f} ({figure.reference_label})" if figure.reference else ""
        rate = figure.unit == "ticks/s"
        ratio = f"{figure.ratio:.2f}x" if rate and figure.ratio is not None else ""
        held = {True: "yes", False: "**no**", None: ""}[figure.met]
        value = f"{figure.value:,.1f}" if figure.unit in ("ms", "%") else f"{figure.value:,.0f}"
        lines.append(f"| {figure.label} | {value}{unit} | {reference} | {ratio} | {figure.target} | {held} |")
    return "\n".join(lines)


def main() -> None:
    """Run the suite and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite runs, nothing to quote")
    args = parser.parse_args()
    figures: list[Figure] = []
    start = time.monotonic()
    for module, argv in QUICK if args.quick else SUITE:
        print(f"\n## python -m {module.__name__} {' '.join(argv)}", flush=True)
        figures += module.run(module.parser().parse_args(argv))
    minutes = (time.monotonic() - start) / 60
    print(f"\n## Summary ({minutes:.1f} min)\n")
    print(table(figures))
    print()
    print(FOOTNOTE)


if __name__ == "__main__":
    main()
