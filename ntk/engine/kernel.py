"""NNGP and NTK Gram matrices of an architecture on two sets of inputs."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .combinators import serial
from ntk.spec.architecture import Architecture, SpecError
from ntk.spec.cost import Budget, balanced, block_side

from .interrupt import Progress, ShouldStop, Steps
from .state import KernelState, input_kernel

KERNELS = ("nngp", "ntk")


class NonFiniteKernel(ArithmeticError):
    """The recursion overflowed (or met 0/0): the spec's scales are too large for this dtype."""


def overflow_advice(what: str, dtype: torch.dtype) -> str:
    advice = "reduce w_std/b_std, the depth or the inputs' scale"
    if dtype != torch.float64:
        advice += ", or use float64"
    return f"{what} overflowed to a non-finite value in {str(dtype).removeprefix('torch.')}: {advice}"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``auto`` (or None) picks the first CUDA device when one exists."""
    if device is None or str(device) == "auto":
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
    *,
    budget: Budget = Budget(),
    should_stop: ShouldStop | None = None,
    progress: Progress | None = None,
) -> dict[str, Tensor]:
    """K(x1, x2) and/or Θ(x1, x2) of the infinitely wide network ``spec``, each (N1, N2).

    x2 = None means x2 = x1: the result is exactly symmetric and only its upper-triangle blocks
    are computed. Inputs are (N, d), (N, L, C) or (N, H, W, C), channels last. The matrix is
    computed in blocks of at most ``block_size`` points a side (default: sized for the cache on a
    CPU, for the memory ``budget`` on a GPU; see ``default_block_size``) and written into the result
    as they come, so memory stays bounded whatever N is.

    Each layer of each block is one step (``interrupt``): ``should_stop()`` is asked before it, and
    ``Stopped`` raised when it answers True; ``progress(done, total)`` is told after it, total
    being blocks × ``arch.depth()``.
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

    size = block_size or default_block_size(arch, tuple(x1.shape[1:]), dtype, device, budget)
    n1, n2 = x1.shape[0], None if x2 is None else x2.shape[0]
    if n1 <= size and (n2 is None or n2 <= size):
        return _block(arch, x1, x2, get, Steps(arch.depth(), should_stop, progress))
    blocks = list(tiles(n1, n2, size))
    steps = Steps(len(blocks) * arch.depth(), should_stop, progress)
    other = x1 if x2 is None else x2
    out = {name: torch.empty((n1, n1 if n2 is None else n2), dtype=dtype, device=device) for name in get}
    for i0, i1, j0, j1 in blocks:
        block = _block(arch, x1[i0:i1], None if n2 is None and i0 == j0 else other[j0:j1], get, steps)
        place(out, (i0, i1, j0, j1), block, symmetric=n2 is None)
    return out


def _block(arch: Architecture, x1: Tensor, x2: Tensor | None, get: tuple[str, ...], steps: Steps) -> dict[str, Tensor]:
    """Run the layer stack on one block of point pairs, one step per layer."""
    k = serial(arch.layers, block_input(arch, x1, x2, get), arch.parameterization, steps)
    return block_output(k, get, symmetric=x2 is None)


def block_input(arch: Architecture, x1: Tensor, x2: Tensor | None, get: tuple[str, ...]) -> KernelState:
    """The input kernel state of one block, tracking what ``arch``'s layers will need."""
    full_spatial = arch.needs_full_spatial() and x1.ndim > 2
    return input_kernel(x1, x2, full_spatial=full_spatial, compute_ntk="ntk" in get,
                        cov_full_spatial=full_spatial and arch.covariances_need_full_spatial())


def block_output(k: KernelState, get: tuple[str, ...], symmetric: bool) -> dict[str, Tensor]:
    """The kernels ``get`` of the stack's output state, checked finite; a block of x1 against
    itself made exactly symmetric."""
    out = {name: getattr(k, name) for name in get}
    for name, value in out.items():
        # A NaN or ±inf anywhere makes the sum non-finite: one read pass and no boolean mask in the
        # usual case (a sweep checks every architecture's output); the sum can also overflow on
        # finite entries near the largest float, hence the entrywise check before raising.
        if not math.isfinite(value.sum()) and not torch.isfinite(value).all():
            raise NonFiniteKernel(overflow_advice(f"the {name} kernel", value.dtype))
    if symmetric:
        # (K + Kᵀ)/2, the halving in place: the same numbers (halving is exact) 4× faster than
        # dividing into a new tensor, which matters when a sweep symmetrizes every architecture.
        out = {name: torch.add(value, value.T).mul_(0.5) for name, value in out.items()}
    return out


def default_block_size(arch: Architecture, point_shape: tuple[int, ...], dtype: torch.dtype,
                       device: torch.device | None = None, budget: Budget = Budget()) -> int:
    """Points per block side (``cost.block_side``: sized for the cache on a CPU, memory on a GPU)."""
    on_gpu = device is not None and torch.device(device).type != "cpu"
    return block_side(arch, point_shape, torch.finfo(dtype).bits // 8, on_gpu, budget)


def check_inputs(arch: Architecture, x1: Tensor, x2: Tensor | None) -> None:
    """Raise SpecError when the inputs do not fit the network (or each other)."""
    check_points(x1, x2)
    arch.check(tuple(x1.shape[1:]))


def check_points(x1: Tensor, x2: Tensor | None) -> None:
    """Raise SpecError when the inputs are no points, or points of two shapes."""
    if x1.ndim not in (2, 3, 4) or x1.shape[0] == 0:
        raise SpecError(("x1",), f"x1 must be (N, d), (N, L, C) or (N, H, W, C) with N ≥ 1, got shape "
                        f"{tuple(x1.shape)}")
    if x2 is not None and tuple(x2.shape[1:]) != tuple(x1.shape[1:]):
        raise SpecError(("x2",), f"x2 points have shape {tuple(x2.shape[1:])} but x1 points have "
                        f"{tuple(x1.shape[1:])}")
    if x2 is not None and x2.shape[0] == 0:
        raise SpecError(("x2",), "x2 has no points")


# -- tiles -----------------------------------------------------------------------------------

Tile = tuple[int, int, int, int]


def tiles(n1: int, n2: int | None, size: int) -> Iterator[Tile]:
    """Blocks (i0, i1, j0, j1) covering K(x1, x2); for x2 = x1 (n2 None) the upper triangle only.

    Blocks along an axis are of (nearly) equal sizes, at most ``size``: 129 points in blocks of
    64 become 43 + 43 + 43, not 64 + 64 + 1, so no block is a sliver paying full overhead.
    """
    symmetric = n2 is None
    n2 = n1 if symmetric else n2
    rows, cols = balanced(n1, size), balanced(n2, size)
    for r, (i0, i1) in enumerate(rows):
        for j0, j1 in rows[r:] if symmetric else cols:
            yield i0, i1, j0, j1


def kernel_tile(spec, x1, x2, tile: Tile, get=KERNELS, dtype=torch.float64, device=None, *,
                budget: Budget = Budget(), should_stop: ShouldStop | None = None,
                progress: Progress | None = None) -> dict[str, Tensor]:
    """One block K(x1[i0:i1], x2[j0:j1]) (x2 None: x1 against itself), computable on its own.

    A diagonal block of a symmetric matrix is computed as a symmetric kernel, so the assembled
    matrix is exactly symmetric. ``should_stop`` and ``progress`` as for ``kernel_fn``.
    """
    i0, i1, j0, j1 = tile
    if x2 is None and (i0, i1) == (j0, j1):
        return kernel_fn(spec, x1[i0:i1], None, get, dtype, device, budget=budget, should_stop=should_stop,
                         progress=progress)
    other = x1 if x2 is None else x2
    return kernel_fn(spec, x1[i0:i1], other[j0:j1], get, dtype, device, budget=budget, should_stop=should_stop,
                     progress=progress)


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
