"""Real infrastructure for tests: a one-node Slurm and a private PostgreSQL."""
