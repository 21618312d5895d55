"""The `vlb` command: runs the whole system on one machine, starting local services when needed."""
