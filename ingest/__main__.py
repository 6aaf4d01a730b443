"""`python -m ingest ingest FILE|-` and `python -m ingest status`: the ground floor's commands on their own."""

from __future__ import annotations

import typer

from ingest.cli import register


def main() -> None:
    """Run the ingest command line."""
    app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
