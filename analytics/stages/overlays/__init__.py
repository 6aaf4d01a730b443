"""Chart overlays per bar interval: each one defined once, here, and written with the bars that close.

`base` says what an overlay is (its per-series state, its update on one closed bar, its lines and how
the chart draws them), one module per overlay defines one, `registry.OVERLAYS` lists those the worker
computes, and `stage.OverlayStage` runs them on every closed bar of every (interval, symbol) series.
The dashboard draws the values it reads with the bars; it computes none.
"""
