"""The `tickerdash` console script: SIGTERM is routed first, then the commands load and run.

A supervisor may stop a command at any moment, even while it still imports: that is a normal end
(exit 0), so SIGTERM's handler comes before any import but the standard library's `signal`.
"""

from __future__ import annotations

import sys

from tickerdash.ingest.stopping import INTERRUPTED, Terminated, sigterm_received, sigterm_stops_like_ctrl_c


def main() -> None:
    """Entry point of the console script."""
    try:
        sigterm_stops_like_ctrl_c()  # inside: a SIGTERM can land as soon as the handler is set, before it returns
        # Heavy libraries (scipy, scikit-learn, pandas, dash) load inside the commands that use them, so
        # `--help` and short commands start fast; the long-running ones preload theirs and then call
        # `freeze_import_objects` themselves before their loops.
        from tickerdash.commands import app

        try:
            app()
        except Exception as exc:
            if not _is_redis_server_error(exc):
                raise
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


def _is_redis_server_error(exc: Exception) -> bool:
    # only a command that has imported the embedded server's module (the Redis client, ~0.1 s) can raise its
    # error: `--help` and commands without Redis do not pay for importing it here
    redis_server = sys.modules.get("tickerdash.ingest.redis_server")
    return redis_server is not None and isinstance(exc, redis_server.RedisServerError)


if __name__ == "__main__":
    main()
