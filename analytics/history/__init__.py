"""History: closed bars archived to Parquet, and exports of bars, alerts, anomalies and trades."""
