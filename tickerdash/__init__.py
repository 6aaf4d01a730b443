"""The front door: the `tickerdash` command, composed from each package's own sub-commands, and `up`."""
