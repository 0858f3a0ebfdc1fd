"""Sampling limits of a Monte Carlo estimate, shared by the API (its schema and defaults), the CLI
and the engine, without importing torch.

The standard error of an estimate shrinks as 1/√samples (ntk.engine.monte_carlo): 100 networks
give about a tenth of one network's spread.
"""

DEFAULT_SAMPLES = 100
MAX_SAMPLES = 100_000
