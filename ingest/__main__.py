"""`python -m tickerdash.ingest ingest FILE|-` and `python -m tickerdash.ingest status`: the ground floor's commands."""

from __future__ import annotations

import typer

from tickerdash.ingest.cli import register


def main() -> None:
    """Run the ingest command line."""
    app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
