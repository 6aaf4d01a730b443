"""Data in, figure out: the price chart the page streams into. No I/O here.

The chart's traces come in a fixed order, named in `layout.meta.roles`, so the page's script
(assets/tickerdash-10-chart.js) can extend them in place. Overlays are drawn, never computed, here: their
values come with the bars (the fields the analytics worker writes after each bar's own), and their
labels, colours and panels from the overlay registry (`layout.meta.overlays`), so the page's legend
is the analytics' own. An overlay on a panel other than the prices gets a chart row of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tickerdash.analytics.stages.overlays.registry import OVERLAYS as OVERLAY_DEFINITIONS

OVERLAYS = tuple(overlay.name for overlay in OVERLAY_DEFINITIONS)  # the chart's overlay choices
OVERLAY_LABELS = {overlay.name: overlay.label for overlay in OVERLAY_DEFINITIONS}
STYLES = ("candles", "line")
THEMES = ("light", "dark")
UP_COLOUR, DOWN_COLOUR = "#26a69a", "#ef5350"
# The dark chart sits on the page's dark panels (assets/tickerdash.css), not on plotly_dark's near-black.
THEME_LAYOUT = {
    "light": {"template": "plotly_white"},
    "dark": {"template": "plotly_dark", "paper_bgcolor": "#161b22", "plot_bgcolor": "#161b22"},
}


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
    # overlay field -> its value at each bar (None: not defined there, or the bar is still open)
    overlays: dict[str, list[float | None]] = field(default_factory=dict)
    closed_until: int | None = None  # start of the newest closed bar read (the page fetches what closes later)

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
            overlays={name: [values[i] for i in keep] + [None] for name, values in self.overlays.items()},
            closed_until=self.closed_until,
        )


@dataclass(frozen=True, slots=True)
class Marker:
    """A point to mark on the chart: an alert or an anomaly, with its hover text."""

    ts: int
    price: float
    text: str
    score: float | None = None  # an anomaly's score: the page shows only those at or above its threshold


def plain_text(text: str) -> str:
    """Text that Plotly shows as typed: its pseudo-HTML tags (<b>, <a href>, <br>) are escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markers(markers: Iterable[Marker], name: str, marker: dict[str, Any]) -> go.Scatter:
    items = list(markers)
    return go.Scatter(
        x=[m.ts for m in items],
        y=[m.price for m in items],
        hovertext=[plain_text(m.text) for m in items],
        customdata=[m.score for m in items],
        hoverinfo="text+x",
        mode="markers",
        name=name,
        yaxis="y",
        # A marker the page clamps to the edge of its price axis must not be cut in half by it.
        cliponaxis=False,
        marker=marker,
    )


# Anomalies are frequent and secondary: small open diamonds that leave the candles readable. Alerts are
# what a user asked for: larger, solid, outlined, and drawn after (so above) the anomalies.
ANOMALY_MARKER = {"symbol": "diamond-open", "size": 9, "color": "#f59e0b", "line": {"width": 1.5}}
ALERT_MARKER = {"symbol": "triangle-down", "size": 16, "color": "#d32f2f", "line": {"width": 1.5, "color": "#ffffff"}}
FOCUS_MARKER = {"symbol": "circle-open", "size": 24, "color": "#1e88e5", "line": {"width": 3}}


def _panels() -> list[Any]:
    """The chart rows of overlay panels other than the prices, in registry order."""
    panels: list[Any] = []
    for overlay in OVERLAY_DEFINITIONS:
        for line in overlay.lines:
            if line.panel.name != "price" and line.panel not in panels:
                panels.append(line.panel)
    return panels


def overlay_meta() -> list[dict[str, Any]]:
    """Every overlay line as the page draws it: field, label, colour, panel, y range, dash, its overlay."""
    return [{**line.to_dict(), "overlay": overlay.name} for overlay in OVERLAY_DEFINITIONS for line in overlay.lines]


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
    theme: str = "light",
) -> go.Figure:
    """The price chart of one symbol at one interval: price, overlays and markers above, a row per
    overlay panel, volume below."""
    shown = set(overlays)
    x = bars.start
    panels = _panels()
    row_of = {"price": 1, **{panel.name: 2 + k for k, panel in enumerate(panels)}}
    volume_row = 2 + len(panels)
    heights = [0.55, *(0.2 / len(panels),) * len(panels), 0.25] if panels else [0.75, 0.25]
    figure = make_subplots(
        rows=volume_row,
        cols=1,
        shared_xaxes=True,
        row_heights=heights,
        vertical_spacing=0.03,
    )
    traces: list[tuple[str, Any, int]] = [
        (
            "candles",
            go.Candlestick(
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
            1,
        ),
        (
            "line",
            go.Scatter(
                x=x,
                y=bars.close,
                mode="lines",
                name="price",
                visible=style == "line",
                line={"color": "#1f77b4", "width": 1.5},
            ),
            1,
        ),
    ]
    lines = overlay_meta()
    for line in lines:
        values = bars.overlays.get(line["field"], [])
        points = [(at, v) for at, v in zip(x, values, strict=False) if v is not None]  # only closed bars have them
        trace = go.Scatter(
            x=[at for at, _ in points],
            y=[v for _, v in points],
            mode="lines",
            name=line["label"],
            visible=line["overlay"] in shown,
            line={"color": line["colour"], "width": 1, "dash": line["dash"]},
        )
        traces.append((line["field"], trace, row_of[line["panel"]]))
    traces += [
        (
            "volume",
            go.Bar(
                x=x,
                y=bars.volume,
                customdata=bars.vwap,
                name="volume",
                showlegend=False,
                marker={"color": "#90a4ae"},
            ),
            volume_row,
        ),
        ("anomalies", _markers(anomalies, "anomalies", ANOMALY_MARKER), 1),
        ("alerts", _markers(alerts, "alerts", ALERT_MARKER), 1),
        # the event a user clicked in the alerts or anomalies panel: a ring the page moves there
        ("focus", _markers((), "selected", FOCUS_MARKER).update(showlegend=False, hoverinfo="skip"), 1),
    ]
    for _, trace, row in traces:
        figure.add_trace(trace, row=row, col=1)
    roles = {role: i for i, (role, _, _) in enumerate(traces)}
    # A symbol's chart has no title: the page's readout line above it names the symbol, interval and bar,
    # and the legend needs the room.
    title = f"{symbol} · {interval} bars (UTC)" if symbol else "waiting for the first trades…"
    figure.update_layout(
        title={"text": "" if symbol else plain_text(title), "x": 0.01},
        margin={"l": 50, "r": 20, "t": 40 if symbol is None else 10, "b": 30},
        **THEME_LAYOUT[theme],
        hovermode="x unified",
        legend={"orientation": "h", "y": 1.0, "x": 0, "xanchor": "left", "yanchor": "bottom", "font": {"size": 11}},
        uirevision=f"{symbol}:{interval}",  # keep the user's zoom while points stream in
        meta={
            "symbol": symbol,
            "interval": interval,
            "roles": roles,
            "overlays": [{**line, "trace": roles[line["field"]]} for line in lines],
            "closed_until": bars.closed_until,
            "generation": generation if generation is not None else time.time_ns(),
        },
    )
    figure.update_xaxes(
        type="date",
        rangeslider_visible=False,
        showspikes=True,
        spikemode="across",
        spikesnap="cursor",
        spikethickness=1,
        spikedash="dot",
    )
    for panel in panels:
        figure.update_yaxes(
            title_text=panel.name, range=list(panel.y_range or ()) or None, row=row_of[panel.name], col=1
        )
    figure.update_yaxes(title_text="volume", row=volume_row, col=1)
    return figure
