"""Keep freed CPU memory in the process, for the next block's temporaries.

Every layer of the recursion allocates and frees a dozen same-sized temporaries per block (a few
MiB each on a CPU, see ``kernel.default_block_size``). glibc's malloc serves allocations that
large with fresh ``mmap``\\s and gives freed memory back to the OS, so every temporary is
page-faulted in anew: on bench/harness.py's CNN-GAP that was two thirds of the time. Raising the
mmap threshold to its maximum (32 MiB) and the trim threshold to ``TRIM_THRESHOLD`` keeps
temporaries in the heap, where the next block reuses them without faults (bench/harness.py:
CNN-GAP 2.6× faster, 1.71 s → 0.67 s; CNN-Flatten 1.3×; FC-5 unchanged). The price: up to
``TRIM_THRESHOLD`` bytes of freed memory stay in the process rather than going back to the OS.

Process-wide, so done by the processes that compute (a worker at start, the CLI, the benches),
never by importing the engine; not done where the environment already
sets glibc's own ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (the user chose), nor
where the C library has no ``mallopt`` (macOS, Windows).
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; whether it was done."""
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
