"""Helpers of :mod:`ringnet_lib.train`, one idea each: the ring step, checkpoints,
distributed set-up, and an in-memory synthetic ring set for tests and quick runs."""
