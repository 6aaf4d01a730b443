"""The exactly-once engine: the batch loop over owned partitions, leases, checkpoints and replay, the live view."""
