"""The analytics floor's commands: the worker, alerts, export and archive, evaluate."""
