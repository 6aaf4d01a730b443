"""`alerts tail`: fired alerts followed live off the alerts streams (one per partition), through Redis restarts."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tickerdash.ingest.cli_output import iso_ms
from tickerdash.ingest.clikit import fail, load_settings
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.stopping import INTERRUPTED, Terminated

if TYPE_CHECKING:
    from tickerdash.ingest.cluster import AnyRedis
    from tickerdash.ingest.contract.alerts import AlertEntry
    from tickerdash.ingest.reconnect import Outage

# the rules, the alert codec and the Redis client load inside the functions: `--help` needs none of them

TAIL_READ_COUNT = 100  # alerts per XREAD
TAIL_BLOCK_MS = 1_000  # how long one XREAD waits for new alerts (Ctrl-C is seen at once regardless)
TAIL_POLL_S = 0.1  # on a Redis Cluster, the pause after a round of reads that found no alert
SINCE_HELP = "Start: $ (new alerts only), a stream ID (0: all), or a duration back from now such as 10m."

log = logging.getLogger(__name__)


def _start_id(since: str) -> str:
    """A stream ID to read after: '$' (new only), a stream ID, or a duration back from now."""
    from tickerdash.analytics.stages.alerts.rules import RuleError, parse_duration

    if since == "$" or since.replace("-", "").isdigit():
        return since
    try:
        back_ms = round(parse_duration(since, "--since") * 1000)
    except RuleError as exc:
        fail(f"{exc} (or $ for new alerts only, or a stream ID such as 0)")
    return f"{max(0, time.time_ns() // 1_000_000 - back_ms)}-0"


def _alert_line(entry_id: str, alert: AlertEntry) -> str:
    from tickerdash.analytics.stages.alerts.rules import format_duration

    return (
        f"{iso_ms(alert.ts)}  {alert.symbol:<8} -{alert.drop_pct:.2f}%  {alert.price:.10g} "
        f"(high {alert.reference_price:.10g} in {format_duration(alert.window_s)})  rule {alert.rule_id}  "
        f"[{entry_id}]"
    )


def _last_alert_id(client: AnyRedis, stream: str) -> str:
    import redis

    try:
        info: Any = client.xinfo_stream(stream)
    except redis.ResponseError:  # no alerts stream yet: every alert is new
        return "0-0"
    return info["last-generated-id"].decode()


def _read_alerts(client: AnyRedis, cursors: dict[str, str]) -> list[tuple[str, str, Any]]:
    """(stream, entry id, fields) of the alerts after the cursors (`read_streams`: one XREAD that waits for them on
    a standalone server; on a Redis Cluster one per stream, and a short pause when none brought an alert)."""
    from tickerdash.ingest.cluster import read_streams

    found = read_streams(
        client, cursors, count=TAIL_READ_COUNT, block_ms=TAIL_BLOCK_MS, idle=lambda: time.sleep(TAIL_POLL_S)
    )
    return [(stream.decode(), raw_id.decode(), fields) for stream, entries in found for raw_id, fields in entries]


def follow_alerts(client: AnyRedis, keys: Keys, after: str, outage: Outage) -> Iterator[tuple[str, AlertEntry]]:
    """Every alert after stream ID `after` (`$`: after the newest now) on every partition's alerts stream, as it
    arrives, with its entry id; the alerts of one read in entry-ID order.

    Redis outages (on a cluster, a failover or a slot move too) are waited out with `outage`'s backoff, and each
    stream's reads resume after the last alert yielded from it: across a restart no alert is repeated or
    skipped. An entry that cannot be decoded is logged and skipped.
    """
    from tickerdash.ingest.cluster import UNAVAILABLE, refresh_slot_map
    from tickerdash.ingest.contract.alerts import decode_alert
    from tickerdash.ingest.contract.fields import id_order
    from tickerdash.ingest.reconnect import through_outages, wait_out

    cursors = dict.fromkeys(keys.alert_streams, after)
    if after == "$":  # resolve now, so alerts between two reads are never skipped
        for stream in cursors:
            cursors[stream] = through_outages(lambda s=stream: _last_alert_id(client, s), outage)  # type: ignore[misc]
    while True:
        try:
            read = _read_alerts(client, cursors)
        except UNAVAILABLE as exc:  # the cursors resume exactly where the outage began
            refresh_slot_map(client)
            wait_out(outage, exc)
            continue
        outage.recovered()
        for stream, entry_id, fields in sorted(read, key=lambda entry: id_order(entry[1])):
            cursors[stream] = entry_id
            try:
                alert = decode_alert(fields)
            except (KeyError, ValueError) as exc:
                log.warning("skipped alert entry %s of %s: cannot decode it (%s)", entry_id, stream, exc)
                continue
            yield entry_id, alert


def tail(
    count: Annotated[int | None, typer.Option(help="Stop after this many alerts (default: follow forever).")] = None,
    since: Annotated[str, typer.Option(help=SINCE_HELP)] = "$",
    rule_id: Annotated[str | None, typer.Option("--rule", help="Only alerts of this rule.")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line: id (stream entry id), rule_id, symbol, ts (epoch ms), price, "
            "reference_price, drop_pct, window_s, message, tick_id.",
        ),
    ] = False,
) -> None:
    """Follow fired alerts live from the alerts stream.

    Rides out a Redis restart: one line says that Redis is gone, one that it is back, and the alerts
    resume after the last one printed, none repeated or skipped.
    Ctrl-C ends it with exit code 130, SIGTERM with 0.

    Examples: `tickerdash alerts tail`; `tickerdash alerts tail --since 10m --rule demo-slump --json`.
    """
    from tickerdash.ingest.layout import check_layout_if_reachable
    from tickerdash.ingest.reconnect import Outage
    from tickerdash.ingest.redis_server import client_for, redis_url, shown_url

    if count is not None and count < 1:
        fail("--count must be at least 1")
    settings = load_settings()
    keys = Keys(settings.prefix, settings.partitions)
    after = _start_id(since)
    shown = 0
    try:
        with redis_url(settings) as url, contextlib.closing(client_for(url, cluster=True)) as client:
            check_layout_if_reachable(client, keys)
            outage = Outage(log, what=f"Redis at {shown_url(url)}")
            for entry_id, alert in follow_alerts(client, keys, after, outage):
                if rule_id is not None and alert.rule_id != rule_id:
                    continue
                typer.echo(
                    json.dumps({"id": entry_id, **alert.to_json_dict()}) if as_json else _alert_line(entry_id, alert)
                )
                shown += 1
                if count is not None and shown >= count:
                    return
    except KeyboardInterrupt as stop:
        raise typer.Exit(0 if isinstance(stop, Terminated) else INTERRUPTED) from None
