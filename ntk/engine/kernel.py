"""NNGP and NTK Gram matrices of an architecture on two sets of inputs."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .combinators import serial
from ntk.spec.architecture import Architecture, SpecError
from .state import input_kernel

KERNELS = ("nngp", "ntk")


class NonFiniteKernel(ArithmeticError):
    """The recursion overflowed (or met 0/0): the spec's scales are too large for this dtype."""


def overflow_advice(what: str, dtype: torch.dtype) -> str:
    advice = "reduce w_std/b_std, the depth or the inputs' scale"
    if dtype != torch.float64:
        advice += ", or use float64"
    return f"{what} overflowed to a non-finite value in {str(dtype).removeprefix('torch.')}: {advice}"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``auto`` (or None, or NTK_DEVICE) picks the first CUDA device when one exists."""
    device = device or os.environ.get("NTK_DEVICE", "auto")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_points(x, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def kernel_fn(
    spec: Architecture | dict | str,
    x1,
    x2=None,
    get: Sequence[str] = KERNELS,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    block_size: int | None = None,
) -> dict[str, Tensor]:
    """K(x1, x2) and/or Θ(x1, x2) of the infinitely wide network ``spec``, each (N1, N2).

    x2 = None means x2 = x1: the result is exactly symmetric and only its upper-triangle blocks
    are computed. Inputs are (N, d), (N, L, C) or (N, H, W, C), channels last. The matrix is
    computed in blocks of at most ``block_size`` points a side (default: sized for the cache on a
    CPU, for the memory budget on a GPU; see ``default_block_size``) and written into the result
    as they come, so memory stays bounded whatever N is.
    """
    arch = Architecture.parse(spec)
    get = tuple(get)
    unknown = [g for g in get if g not in KERNELS]
    if unknown or not get:
        raise SpecError(("get",), f"get must name some of {list(KERNELS)}, got {list(get)}")
    device = resolve_device(device)
    x1 = as_points(x1, dtype, device)
    x2 = None if x2 is None else as_points(x2, dtype, device)
    check_inputs(arch, x1, x2)

    size = block_size or default_block_size(arch, tuple(x1.shape[1:]), dtype, device)
    n1, n2 = x1.shape[0], None if x2 is None else x2.shape[0]
    if n1 <= size and (n2 is None or n2 <= size):
        return _block(arch, x1, x2, get)
    other = x1 if x2 is None else x2
    out = {name: torch.empty((n1, n1 if n2 is None else n2), dtype=dtype, device=device) for name in get}
    for i0, i1, j0, j1 in tiles(n1, n2, size):
        block = _block(arch, x1[i0:i1], None if n2 is None and i0 == j0 else other[j0:j1], get)
        place(out, (i0, i1, j0, j1), block, symmetric=n2 is None)
    return out


def _block(arch: Architecture, x1: Tensor, x2: Tensor | None, get: tuple[str, ...]) -> dict[str, Tensor]:
    """Run the layer stack on one block of point pairs."""
    full_spatial = arch.needs_full_spatial() and x1.ndim > 2
    k = input_kernel(x1, x2, full_spatial=full_spatial, compute_ntk="ntk" in get,
                     cov_full_spatial=full_spatial and arch.covariances_need_full_spatial())
    k = serial(arch.layers, k, arch.parameterization)
    out = {name: getattr(k, name) for name in get}
    for name, value in out.items():
        if not torch.isfinite(value).all():
            raise NonFiniteKernel(overflow_advice(f"the {name} kernel", x1.dtype))
    if x2 is None:
        out = {name: (value + value.T) / 2 for name, value in out.items()}
    return out


BLOCK_BYTES = int(os.environ.get("NTK_BLOCK_BYTES", 1 << 30))
CACHE_BYTES = int(os.environ.get("NTK_CACHE_BYTES", 2 << 20))
MAX_BLOCK = 1024
LIVE_COPIES = 10  # kernels and temporaries alive at once inside a layer, per pair entry


def default_block_size(arch: Architecture, point_shape: tuple[int, ...], dtype: torch.dtype,
                       device: torch.device | None = None) -> int:
    """Points per block side: what keeps a layer's working set in cache (CPU) or memory (GPU).

    A pair of points carries one number per kernel for dense networks, one per position when
    only same-position covariances are tracked, and one per pair of positions when pooling needs
    them all: 32×32 images make that a million. Every layer streams each kernel tensor of the
    block several times (tap sums, then the nonlinearity's dozen elementwise passes), so on a CPU
    the block is sized for one kernel tensor to take ``NTK_CACHE_BYTES`` (2 MiB, near the two
    cores' L2 caches: the fastest of 1–32 MiB for the CNNs of bench/harness.py, within 10% for
    FC-5; from 32 MiB on, temporaries leave the reused heap, see ``allocator``, and run 5× slower).
    A GPU gains from large kernels instead, so there the whole working set (about
    ``LIVE_COPIES`` tensors) fills ``NTK_BLOCK_BYTES``. Blocks are capped at MAX_BLOCK so that
    symmetric matrices save work by computing only upper blocks.
    """
    positions = 1
    for n in point_shape[:-1]:
        positions *= n
    per_pair = positions**2 if arch.needs_full_spatial() else positions
    bytes_per_pair = per_pair * torch.finfo(dtype).bits // 8
    on_gpu = device is not None and torch.device(device).type != "cpu"
    budget = BLOCK_BYTES / LIVE_COPIES if on_gpu else min(CACHE_BYTES, BLOCK_BYTES / LIVE_COPIES)
    return max(1, min(MAX_BLOCK, int((budget / bytes_per_pair) ** 0.5)))


def check_inputs(arch: Architecture, x1: Tensor, x2: Tensor | None) -> None:
    """Raise SpecError when the inputs do not fit the network (or each other)."""
    if x1.ndim not in (2, 3, 4) or x1.shape[0] == 0:
        raise SpecError(("x1",), f"x1 must be (N, d), (N, L, C) or (N, H, W, C) with N ≥ 1, got shape "
                        f"{tuple(x1.shape)}")
    if x2 is not None and tuple(x2.shape[1:]) != tuple(x1.shape[1:]):
        raise SpecError(("x2",), f"x2 points have shape {tuple(x2.shape[1:])} but x1 points have "
                        f"{tuple(x1.shape[1:])}")
    if x2 is not None and x2.shape[0] == 0:
        raise SpecError(("x2",), "x2 has no points")
    arch.check(tuple(x1.shape[1:]))


# -- tiles -----------------------------------------------------------------------------------

Tile = tuple[int, int, int, int]


def tiles(n1: int, n2: int | None, size: int) -> Iterator[Tile]:
    """Blocks (i0, i1, j0, j1) covering K(x1, x2); for x2 = x1 (n2 None) the upper triangle only.

    Blocks along an axis are of (nearly) equal sizes, at most ``size``: 129 points in blocks of
    64 become 43 + 43 + 43, not 64 + 64 + 1, so no block is a sliver paying full overhead.
    """
    symmetric = n2 is None
    n2 = n1 if symmetric else n2
    rows, cols = _balanced(n1, size), _balanced(n2, size)
    for r, (i0, i1) in enumerate(rows):
        for j0, j1 in rows[r:] if symmetric else cols:
            yield i0, i1, j0, j1


def _balanced(n: int, size: int) -> list[tuple[int, int]]:
    count = -(-n // size)
    bounds = [n * b // count for b in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def kernel_tile(spec, x1, x2, tile: Tile, get=KERNELS, dtype=torch.float64, device=None) -> dict[str, Tensor]:
    """One block K(x1[i0:i1], x2[j0:j1]) (x2 None: x1 against itself), computable on its own.

    A diagonal block of a symmetric matrix is computed as a symmetric kernel, so the assembled
    matrix is exactly symmetric.
    """
    i0, i1, j0, j1 = tile
    if x2 is None and (i0, i1) == (j0, j1):
        return kernel_fn(spec, x1[i0:i1], None, get, dtype, device)
    other = x1 if x2 is None else x2
    return kernel_fn(spec, x1[i0:i1], other[j0:j1], get, dtype, device)


def assemble(blocks: dict[Tile, dict[str, Tensor]], n1: int, n2: int | None, get=KERNELS) -> dict[str, Tensor]:
    """Place computed blocks into whole matrices, mirroring the upper triangle when symmetric."""
    first = next(iter(blocks.values()))
    out = {name: torch.empty((n1, n1 if n2 is None else n2), dtype=first[name].dtype,
                             device=first[name].device) for name in get}
    for tile, block in blocks.items():
        place(out, tile, block, symmetric=n2 is None)
    return out


def place(out: dict[str, Tensor], tile: Tile, block: dict[str, Tensor], symmetric: bool) -> None:
    """Write one block into the whole matrices (and its mirror image below the diagonal)."""
    i0, i1, j0, j1 = tile
    for name, whole in out.items():
        whole[i0:i1, j0:j1] = block[name]
        if symmetric and i0 != j0:
            whole[j0:j1, i0:i1] = block[name].T
