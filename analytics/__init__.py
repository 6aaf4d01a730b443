"""Analytics: pure stages (indicators, bars, ...) over columnar tick batches, and the worker around them."""
