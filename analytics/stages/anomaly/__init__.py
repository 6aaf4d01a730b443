"""Anomaly scores for suspicious trades: per-trade features, the scorer and its stage."""
