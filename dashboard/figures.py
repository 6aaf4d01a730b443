"""Data in, figure out: the price chart the page streams into. No I/O here.

The chart's traces come in a fixed order, named in `layout.meta.roles`, so the page's script
(assets/tickerdash.js) can extend them in place. The overlays are computed over the chart's bars
exactly as the script computes them for bars that arrive later (same periods, same formulas):
SMA and EMA of bar closes, and the VWAP of the bars shown (cumulative price x volume / volume).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

SMA_PERIOD = 20
EMA_PERIOD = 20
ROLES = ("candles", "line", "sma", "ema", "vwap", "volume", "alerts", "anomalies")
OVERLAYS = ("sma", "ema", "vwap")
STYLES = ("candles", "line")
UP_COLOUR, DOWN_COLOUR = "#26a69a", "#ef5350"


@dataclass(frozen=True, slots=True)
class BarHistory:
    """A symbol's bars in time order, as columns (start in epoch ms)."""

    start: list[int] = field(default_factory=list)
    open: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)
    vwap: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start)

    def with_open_bar(self, bar: Sequence[float] | None) -> BarHistory:
        """These bars plus the open bar `[start, o, h, l, c, v]` (replacing a closed bar of the same start)."""
        if not bar:
            return self
        start = int(bar[0])
        keep = [i for i, s in enumerate(self.start) if s < start]
        estimate = (bar[2] + bar[3] + bar[4]) / 3  # an open bar has no VWAP yet: typical price
        return BarHistory(
            start=[self.start[i] for i in keep] + [start],
            open=[self.open[i] for i in keep] + [float(bar[1])],
            high=[self.high[i] for i in keep] + [float(bar[2])],
            low=[self.low[i] for i in keep] + [float(bar[3])],
            close=[self.close[i] for i in keep] + [float(bar[4])],
            volume=[self.volume[i] for i in keep] + [float(bar[5])],
            vwap=[self.vwap[i] for i in keep] + [estimate],
        )


@dataclass(frozen=True, slots=True)
class Marker:
    """A point to mark on the chart: an alert or an anomaly, with its hover text."""

    ts: int
    price: float
    text: str


def plain_text(text: str) -> str:
    """Text that Plotly shows as typed: its pseudo-HTML tags (<b>, <a href>, <br>) are escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def simple_moving_average(values: Sequence[float], period: int) -> list[float | None]:
    """Mean of the last `period` values at each point (None until there are `period` values)."""
    out: list[float | None] = []
    running = 0.0
    for i, value in enumerate(values):
        running += value
        if i >= period:
            running -= values[i - period]
        out.append(running / period if i >= period - 1 else None)
    return out


def exponential_moving_average(values: Sequence[float], period: int) -> list[float]:
    """EMA with alpha = 2 / (period + 1), seeded with the first value."""
    alpha = 2.0 / (period + 1)
    out: list[float] = []
    for value in values:
        out.append(value if not out else alpha * value + (1 - alpha) * out[-1])
    return out


def cumulative_vwap(vwaps: Sequence[float], volumes: Sequence[float]) -> list[float | None]:
    """VWAP over the bars so far: sum(vwap x volume) / sum(volume) (None before any volume)."""
    out: list[float | None] = []
    notional = volume_sum = 0.0
    for vwap, volume in zip(vwaps, volumes, strict=True):
        notional += vwap * volume
        volume_sum += volume
        out.append(notional / volume_sum if volume_sum > 0 else None)
    return out


def _markers(markers: Iterable[Marker], name: str, symbol: str, colour: str) -> go.Scatter:
    items = list(markers)
    return go.Scatter(
        x=[m.ts for m in items],
        y=[m.price for m in items],
        hovertext=[plain_text(m.text) for m in items],
        hoverinfo="text+x",
        mode="markers",
        name=name,
        yaxis="y",
        marker={"symbol": symbol, "size": 12, "color": colour, "line": {"width": 1, "color": "#222"}},
    )


def price_figure(
    bars: BarHistory,
    *,
    symbol: str | None,
    interval: str,
    style: str = "candles",
    overlays: Iterable[str] = OVERLAYS,
    alerts: Iterable[Marker] = (),
    anomalies: Iterable[Marker] = (),
    generation: int | None = None,
) -> go.Figure:
    """The price chart of one symbol at one interval: price, overlays and markers above, volume below."""
    shown = set(overlays)
    x = bars.start
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03)
    traces: dict[str, Any] = {
        "candles": go.Candlestick(
            x=x,
            open=bars.open,
            high=bars.high,
            low=bars.low,
            close=bars.close,
            name="price",
            visible=style == "candles",
            increasing={"line": {"color": UP_COLOUR}},
            decreasing={"line": {"color": DOWN_COLOUR}},
        ),
        "line": go.Scatter(
            x=x,
            y=bars.close,
            mode="lines",
            name="price",
            visible=style == "line",
            line={"color": "#1f77b4", "width": 1.5},
        ),
        "sma": go.Scatter(
            x=x,
            y=simple_moving_average(bars.close, SMA_PERIOD),
            mode="lines",
            name=f"SMA {SMA_PERIOD}",
            visible="sma" in shown,
            line={"color": "#ff9800", "width": 1},
        ),
        "ema": go.Scatter(
            x=x,
            y=exponential_moving_average(bars.close, EMA_PERIOD),
            mode="lines",
            name=f"EMA {EMA_PERIOD}",
            visible="ema" in shown,
            line={"color": "#9c27b0", "width": 1},
        ),
        "vwap": go.Scatter(
            x=x,
            y=cumulative_vwap(bars.vwap, bars.volume),
            mode="lines",
            name="VWAP",
            visible="vwap" in shown,
            line={"color": "#607d8b", "width": 1, "dash": "dot"},
        ),
        "volume": go.Bar(
            x=x, y=bars.volume, customdata=bars.vwap, name="volume", showlegend=False, marker={"color": "#90a4ae"}
        ),
        "alerts": _markers(alerts, "alerts", "triangle-down", "#d32f2f"),
        "anomalies": _markers(anomalies, "anomalies", "diamond", "#ffb300"),
    }
    for role in ROLES:
        figure.add_trace(traces[role], row=2 if role == "volume" else 1, col=1)
    title = f"{symbol} · {interval} bars (UTC)" if symbol else "waiting for the first trades…"
    figure.update_layout(
        title={"text": plain_text(title), "x": 0.01},
        margin={"l": 50, "r": 20, "t": 40, "b": 30},
        template="plotly_white",
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        uirevision=f"{symbol}:{interval}",  # keep the user's zoom while points stream in
        meta={
            "symbol": symbol,
            "interval": interval,
            "roles": {role: i for i, role in enumerate(ROLES)},
            "sma_period": SMA_PERIOD,
            "ema_period": EMA_PERIOD,
            "generation": generation if generation is not None else time.time_ns(),
        },
    )
    figure.update_xaxes(type="date", rangeslider_visible=False)
    figure.update_yaxes(title_text="volume", row=2, col=1)
    return figure
