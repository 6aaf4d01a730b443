"""`tickerdash status`: every stream with its length, each group's lag, pending and lost entries, producers
waiting for the workers, dead letters.

On a Redis Cluster every primary is scanned (a node that cannot be reached stops the report with an
error rather than leaving its streams out), and each partition shows the node that holds it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from tickerdash.ingest.cli_output import output_console, print_json, print_table
from tickerdash.ingest.clikit import console, load_settings
from tickerdash.ingest.contract.keys import ANALYTICS_GROUP, Keys

if TYPE_CHECKING:
    from tickerdash.ingest.cluster import AnyRedis

# the Redis client and the entry codecs (numpy, pyarrow) load when the report is gathered, not for `--help`

DEADLETTER_SAMPLE = 1_000


def stream_names(client: AnyRedis, keys: Keys) -> list[str]:
    """Every stream under the prefix, sorted: SCAN on every primary of a cluster (an error if one cannot be
    asked, never a partial list)."""
    from tickerdash.ingest.cluster import primary_clients
    from tickerdash.ingest.contract.tick_entries import as_text

    found: set[str] = set()
    for node in primary_clients(client):
        found.update(as_text(k) for k in node.scan_iter(match=keys.every_key, _type="stream", count=1000))
    return sorted(found)


def gather(client: AnyRedis, keys: Keys, group: str = ANALYTICS_GROUP) -> dict[str, Any]:
    """A plain-data picture of the pipeline's streams, groups, partitions (who owns each, on which node) and
    dead letters."""
    from tickerdash.ingest.contract.dead_letters import dead_letter_reason
    from tickerdash.ingest.contract.tick_entries import as_text
    from tickerdash.ingest.group_progress import lost_entries, missed_entries, read_progress

    streams = []
    for name in stream_names(client, keys):
        info = client.xinfo_stream(name)
        infos = client.xinfo_groups(name)
        progress = read_progress(client, name) if infos else None
        groups = []
        for info_of_group in infos:
            g = {as_text(k): as_text(v) for k, v in info_of_group.items()}
            mine = progress.group(g["name"]) if progress else None
            missed = missed_entries(progress, mine) if progress and mine else None
            lost = max(lost_entries(client, keys, g["name"], name), missed or 0)
            groups.append(
                {
                    "name": g["name"],
                    "consumers": g["consumers"],
                    "pending": g["pending"],
                    "lag": g.get("lag"),
                    "last_delivered": g.get("last-delivered-id"),
                    "lost": lost,
                }
            )
        waiting = {as_text(k): as_text(v) for k, v in client.hgetall(keys.backpressure(name)).items()}
        streams.append(
            {
                "stream": name,
                "length": info["length"],
                "last_entry": as_text(info["last-generated-id"]),
                "groups": groups,
                "producer_waiting": waiting.get("message"),
            }
        )
    reasons: Counter[str] = Counter()
    for stream in keys.deadletter_streams:  # the latest DEADLETTER_SAMPLE of each partition's
        recent = client.xrevrange(stream, count=DEADLETTER_SAMPLE) or []
        reasons.update(dead_letter_reason(fields).split(":", 1)[0] for _, fields in recent)
    count = sum(client.xlen(stream) for stream in keys.deadletter_streams)
    return {
        "streams": streams,
        "partitions": _partitions(client, keys, group, streams),
        "workers": _shared_workers(client, keys, group),
        "deadletter": {"count": count, "recent_reasons": dict(reasons.most_common())},
        "rules": client.hlen(keys.rules),
    }


def _partitions(client: AnyRedis, keys: Keys, group: str, streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each partition's tick stream with its node (None on a standalone server), its length, the worker that
    holds its lease (None: nobody), and the group's lag and pending entries on it."""
    from tickerdash.ingest.cluster import node_name
    from tickerdash.ingest.contract.tick_entries import as_text

    by_name = {s["stream"]: s for s in streams}
    pipe = client.pipeline(transaction=False)  # on a cluster, one round trip per node: the leases are in every slot
    for lease in keys.leases(group):
        pipe.get(lease)
    owners: list[Any] = pipe.execute()
    rows = []
    for partition, owner in enumerate(owners):
        stream = keys.ticks(partition)
        mine = [g for g in by_name.get(stream, {}).get("groups", []) if g["name"] == group]
        rows.append(
            {
                "partition": partition,
                "stream": stream,
                "node": node_name(client, stream) or None,
                "length": by_name.get(stream, {}).get("length", 0),
                "owner": as_text(owner) if owner is not None else None,
                "lag": mine[0]["lag"] if mine else None,
                "pending": mine[0]["pending"] if mine else None,
            }
        )
    return rows


def _shared_workers(client: AnyRedis, keys: Keys, group: str) -> list[str]:
    """The live workers that share the group's partitions (`--partitions auto`)."""
    from tickerdash.ingest.cluster import node_client
    from tickerdash.ingest.contract.tick_entries import as_text

    now_ms = int(node_client(client, keys.members(group)).time()[0]) * 1000
    members: list[bytes] = client.zrangebyscore(keys.members(group), now_ms, "+inf")  # type: ignore[assignment]
    return sorted(as_text(m) for m in members)


def render(report: dict[str, Any], console: Console) -> None:
    """Print the report as tables."""
    table = Table(title="Streams", title_justify="left")
    for column in ("stream", "length", "group", "consumers", "pending", "lag"):
        table.add_column(column, justify="left" if column in ("stream", "group") else "right")
    for s in report["streams"]:
        if not s["groups"]:
            table.add_row(s["stream"], f"{s['length']:,}", "-", "", "", "")
        for i, g in enumerate(s["groups"]):
            lag = "?" if g["lag"] is None else f"{g['lag']:,}"
            table.add_row(
                s["stream"] if i == 0 else "",
                f"{s['length']:,}" if i == 0 else "",
                g["name"],
                str(g["consumers"]),
                f"{g['pending']:,}",
                lag,
            )
    print_table(table, console)
    owners = Table(title="Partitions", title_justify="left")
    on_nodes = any(p["node"] for p in report["partitions"])  # a cluster: say which node holds each partition
    for column in ("partition", "stream", *(("node",) if on_nodes else ()), "owner", "pending", "lag"):
        owners.add_column(column, justify="right" if column in ("partition", "pending", "lag") else "left")
    for p in report["partitions"]:
        owners.add_row(
            str(p["partition"]),
            p["stream"],
            *((p["node"],) if on_nodes else ()),
            p["owner"] or "[bold red]none[/]",
            "-" if p["pending"] is None else f"{p['pending']:,}",
            "?" if p["lag"] is None else f"{p['lag']:,}",
        )
    print_table(owners, console)
    if report["workers"]:
        console.print(f"Workers sharing the partitions: {', '.join(report['workers'])}", highlight=False)
    for s in report["streams"]:
        for g in s["groups"]:
            if g["lost"]:
                console.print(
                    f"[bold red]Lost:[/] {g['lost']:,} entries of {s['stream']} were trimmed or deleted "
                    f"before group {g['name']} read them",
                    highlight=False,
                )
        if s["producer_waiting"]:
            console.print(f"[bold yellow]Backpressure:[/] {s['producer_waiting']}", highlight=False)
    dead = report["deadletter"]
    why = ", ".join(f"{k}: {v}" for k, v in dead["recent_reasons"].items()) or "none"
    console.print(f"Dead letters: {dead['count']:,} (recent reasons: {why})")
    console.print(f"Alert rules: {report['rules']}")


def status(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print JSON instead of tables: an object with `streams` (a list: stream, length, last_entry, groups "
        "with name, consumers, pending, lag, last_delivered, lost; producer_waiting), `partitions` (partition, "
        "stream, node (host:port on a Redis Cluster, else null), length, owner, pending, lag of the analytics "
        "group), `workers` (those sharing the partitions), "
        "`deadletter` and `rules`.",
    ),
) -> None:
    """Show every stream with its length, each consumer group's lag and pending entries, which worker owns each
    partition, and dead letters.

    Examples: `tickerdash status`; `tickerdash status --json | jq '.streams[].groups[].lag'`.
    """
    import redis

    from tickerdash.ingest.redis_server import redis_connection

    settings = load_settings()
    with redis_connection(settings, cluster=True) as client:
        try:
            report = gather(client, Keys(settings.prefix, settings.partitions), settings.group)
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            # a node that cannot be asked: no report, rather than one that leaves its streams out
            console.print(f"[bold red]error:[/] cannot read every Redis node: {exc}", highlight=False)
            raise typer.Exit(1) from exc
    if as_json:
        print_json(report)
    else:
        render(report, output_console())
