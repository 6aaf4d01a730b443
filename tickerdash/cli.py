"""The `tickerdash` console script: SIGTERM is routed first, then the commands load and run.

A supervisor may stop a command at any moment, even while it still imports: that is a normal end
(exit 0), so SIGTERM's handler comes before any import but the standard library's `signal`.
"""

from __future__ import annotations

import sys

from tickerdash.ingest.stopping import Terminated, sigterm_received, sigterm_stops_like_ctrl_c

INTERRUPTED = 130  # typer's exit code for a KeyboardInterrupt, which `Terminated` is


def main() -> None:
    """Entry point of the console script."""
    sigterm_stops_like_ctrl_c()
    try:
        # Heavy libraries (scipy, scikit-learn, pandas, dash) load inside the commands that use them, so
        # `--help` and short commands start fast; the long-running ones preload theirs and then call
        # `freeze_import_objects` themselves before their loops.
        from tickerdash.commands import app
        from tickerdash.ingest.redis_server import RedisServerError

        try:
            app()
        except RedisServerError as exc:
            from rich.markup import escape

            from tickerdash.ingest.clikit import console

            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(1)
    except Terminated:
        sys.exit(0)
    except SystemExit as end:
        if end.code == INTERRUPTED and sigterm_received():
            sys.exit(0)
        raise


if __name__ == "__main__":
    main()
