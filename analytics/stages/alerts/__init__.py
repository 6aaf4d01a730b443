"""Slump alerts: rules, their store in Redis, the vectorised evaluation and its stage."""
