"""`python -m tickerdash.analytics`: run an analytics worker (for containers)."""

import typer

from tickerdash.analytics.commands.worker import analytics
from tickerdash.ingest.clikit import freeze_import_objects, setup_logging


def main() -> None:
    """Run one analytics worker."""
    setup_logging()
    freeze_import_objects()
    typer.run(analytics)


if __name__ == "__main__":
    main()
