"""Analytics: what the workers make of the tick stream, in the order a tick meets it.

- `engine/`: the exactly-once loop. A worker owns partitions (leases), reads their ticks in batches,
  runs the stages, and writes their outputs with the progress marker and the XACK in one transaction;
  checkpoints and replay put a restarted worker exactly where the old one stood.
- `stages/`: the pure stages (no Redis): bars, indicators, slump alerts, anomaly scores.
- `history/`: closed bars archived to Parquet, and exports of history to Parquet or CSV.
- `delivery/`: fired alerts sent on to the outside world (webhooks).
- `commands/`: the `tickerdash analytics`, `alerts`, `export`, `archive` and `evaluate` commands.
"""
