"""`python -m tickerdash.dashboard`: the dashboard command on its own (for containers)."""

from __future__ import annotations

import typer

from tickerdash.dashboard.cli import dashboard


def main() -> None:
    """Run the dashboard command line."""
    typer.run(dashboard)


if __name__ == "__main__":
    main()
