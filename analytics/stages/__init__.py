"""The stages a tick flows through: bars, indicators, slump alerts, anomaly scores (pure: no Redis)."""
