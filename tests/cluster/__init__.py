"""Tests against a real batch system (a one-node Slurm on loopback)."""
