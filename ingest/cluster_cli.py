"""`tickerdash local-cluster`: a Redis Cluster on this machine, to run Tickerdash on (see docs/cluster.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from tickerdash.ingest.cli_output import output_console

log = logging.getLogger(__name__)
PARTITIONS_PER_PRIMARY = 2  # room to spread the work when primaries are added, without idle partitions now


def local_cluster_command(
    primaries: int = typer.Option(3, min=1, max=16, help="Primaries sharing the 16,384 slots."),
    replicas: int = typer.Option(1, min=0, max=4, help="Replicas of each primary (a primary that dies fails over)."),
    data_dir: Path | None = typer.Option(
        None, help="Keep the nodes' data here, with append-only files; by default a temporary dir, gone at exit."
    ),
) -> None:
    """Run a Redis Cluster on this machine until Ctrl-C, and print the settings that point Tickerdash at it."""
    from tickerdash.ingest.local_cluster import local_cluster
    from tickerdash.ingest.redis_server import RedisServerError
    from tickerdash.ingest.stop_flag import StopFlag

    console = output_console()
    stop = StopFlag().install()
    try:
        with local_cluster(primaries, replicas, data_dir, appendonly=data_dir is not None) as nodes:
            ports = ", ".join(str(node.port) for node in nodes[:primaries])
            console.print(f"Redis Cluster up: {primaries} primaries (ports {ports}), {replicas} replica(s) each")
            console.print("Point every Tickerdash command at it (the URL of any node will do):")
            console.print(f"  export TICKERDASH_REDIS_URL={nodes[0].url}", highlight=False)
            console.print(f"  export TICKERDASH_PARTITIONS={PARTITIONS_PER_PRIMARY * primaries}", highlight=False)
            console.print("Ctrl-C stops every node.")
            while not stop.wait(1.0):
                pass
    except RedisServerError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print("cluster stopped")


def register(app: typer.Typer) -> None:
    """Add the command to the front door."""
    app.command("local-cluster")(local_cluster_command)
