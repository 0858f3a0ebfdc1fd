"""The kernel engine: analytic NNGP and NTK of infinitely wide networks, in PyTorch.

A plain library (no Redis, no HTTP): ``kernel_fn(spec, x1, x2)`` returns the Gram matrices, and
``tiles``/``kernel_tile``/``assemble`` split a large one into blocks computable on their own.
Importing it changes nothing process-wide: the processes that compute tune the allocator
(ntk.worker.allocator) themselves.
"""

from .kernel import KERNELS, Budget, NonFiniteKernel, assemble, kernel_fn, kernel_tile, resolve_device, tiles
from ntk.spec.architecture import Architecture, SpecError, validation_errors
from .interrupt import Stopped

__all__ = [
    "KERNELS", "Architecture", "Budget", "NonFiniteKernel", "SpecError", "Stopped", "assemble", "kernel_fn",
    "kernel_tile", "resolve_device", "tiles", "validation_errors",
]
