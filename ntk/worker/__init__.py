"""Compute side of the service: the kernel engine and the queue consumers that run it."""
