"""Delivery of fired alerts to the outside world (webhooks)."""
