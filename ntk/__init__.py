"""ntk-service: NNGP and NTK kernels of infinitely wide networks, computed in PyTorch and served over HTTP.

The packages depend on each other in one direction (enforced by import-linter, see pyproject.toml):
``api`` and ``worker`` use ``engine``/``core``; ``engine`` uses ``spec``; ``core`` uses ``spec``.
"""
