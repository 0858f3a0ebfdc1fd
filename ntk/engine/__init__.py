"""The kernel engine: analytic NNGP and NTK of infinitely wide networks, in PyTorch.

A plain library (no Redis, no HTTP): ``kernel_fn(spec, x1, x2)`` returns the Gram matrices, and
``tiles``/``kernel_tile``/``assemble`` split a large one into blocks computable on their own.
"""

from .allocator import keep_freed_memory
from .kernel import KERNELS, NonFiniteKernel, assemble, kernel_fn, kernel_tile, resolve_device, tiles
from ntk.spec.architecture import Architecture, SpecError, validation_errors

keep_freed_memory()

__all__ = [
    "KERNELS", "Architecture", "NonFiniteKernel", "SpecError", "assemble", "kernel_fn", "kernel_tile",
    "resolve_device", "tiles", "validation_errors",
]
