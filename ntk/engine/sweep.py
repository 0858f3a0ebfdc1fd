r"""Many architectures on one dataset, sharing what they share, and the numbers to choose among them.

``sweep(points, x_train, y_train, x_val, y_val)`` takes the architectures of ``sweep_grid.expand``
and returns one row per architecture: its row key and

* ``log_marginal_likelihood``: log p(Y) of the training targets under the NNGP prior
  y ~ N(0, σ²(K + εI)) for each of the k output columns (independent, Rasmussen & Williams 2006,
  eq. (2.30)), with the output scale σ² at its maximum-likelihood value in closed form:
  with A = K + εI,

      σ̂² = tr(Yᵀ A⁻¹ Y) / (n k),     log p = −½ [n k (1 + log 2π σ̂²) + k log det A];

* ``output_scale`` σ̂² and ``diag_reg``, ε relative to the mean diagonal of K (predict.py's
  ``diag_reg``, so log p does not change when K is scaled), given or fitted (``diag_reg="fit"``:
  the ε maximizing log p, found on a log grid and refined by golden-section search, see
  ``fit_diag_reg``);
* with a validation set, ``nngp_mse``/``ntk_mse`` (mean over points and outputs) of the t = ∞
  predictors (the NNGP posterior mean and the NTK ensemble mean, ``predict.predict`` with the same
  relative ``diag_reg``) and, for targets of k ≥ 2 columns (one-hot), ``nngp_accuracy``/
  ``ntk_accuracy``: how often the argmax of the mean is the argmax of the target;
* ``error``: None, or why this architecture has no numbers (its kernel overflowed, or A is not
  positive definite at this ε): one failing architecture does not fail the sweep.

Sharing
-------
The architectures' layer lists form a trie: architectures that begin with the same layers (equal
parameters, same parameterization) share the path from the root, and each node applies one layer
(``combinators.serial`` on one layer, the engine's own maps) to its parent's state. On each block
of point pairs (the blocks ``kernel_fn`` would use, so every architecture's kernel equals its own
``kernel_fn`` to the bit) the input Gram is computed once and the trie walked once: a depth grid
1…D costs D blocks and D readouts instead of D(D+1)/2 blocks. The walk is depth first, the largest
subtree of each node last, so a parent's state is freed as soon as its last child starts: a chain
holds O(1) states.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .combinators import serial
from .interrupt import Progress, ShouldStop, Steps
from .kernel import (Budget, NonFiniteKernel, as_points, block_input, block_output, check_points, default_block_size,
                     overflow_advice, resolve_device, tiles)
from .layers import KEEPS_SYMMETRY
from .predict import Factorization, NotPositiveDefinite, PredictError, factorize, predict
from .state import KernelState
from ntk.spec.architecture import Architecture
from ntk.spec.sweep_grid import SweepPoint
from ntk.spec.trie import Root, build_trie, check_architectures, layer_keys

# Memory for the kernels of the architectures computed together (the service's NTK_SWEEP_BYTES):
# beyond it the sweep runs its architectures in groups, sharing prefixes within each group only.
SWEEP_BYTES = 2 << 30
# fit_diag_reg's search range, in decades of ε relative to the mean diagonal of K.
FIT_RANGE = (-8.0, 2.0)
FIT_GRID_PER_DECADE = 4
FIT_TOLERANCE = 1e-3  # decades


# -- the trie (ntk.spec.trie) ----------------------------------------------------------------


def layer_applications(architectures: Sequence[Architecture]) -> int:
    """How many layers a sweep of these architectures applies per block of points (the trie's
    nodes): its cost in layers, for a cost model, against ``Σ arch.depth()`` computed alone."""
    return sum(root.node.size - 1 for root in build_trie(architectures))


def walk(root: Root, x1: Tensor, x2: Tensor | None, get: tuple[str, ...], steps: Steps
         ) -> Iterator[tuple[int, KernelState, bool]]:
    """(architecture index, its output state on this block, whether that state is exactly
    symmetric) for every architecture of the trie, each shared layer applied once. A state is
    shared with the architectures that continue from it: read it before taking the next.

    A block of points against themselves (``x2`` None) without spatial axes whose input kernel is
    symmetric to the bit stays so through every layer in ``KEEPS_SYMMETRY``: its (K + Kᵀ)/2 is K."""
    parameterization = root.sample.parameterization
    start = block_input(root.sample, x1, x2, get)
    symmetric = x2 is None and x1.ndim == 2 and torch.equal(start.nngp, start.nngp.T)
    pending = [(child, start, symmetric) for child in root.node.children.values()]
    del start
    while pending:
        node, state, symmetric = pending.pop()
        steps.check()
        state = serial([node.layer], state, parameterization)
        symmetric = symmetric and node.layer.type in KEEPS_SYMMETRY
        for index in node.ends:
            yield index, state, symmetric
        pending += [(child, state, symmetric) for child in node.children.values()]
        del state


# -- kernels of many architectures ------------------------------------------------------------


def sweep_kernels(
    architectures: Sequence[Architecture],
    x_train,
    x_val=None,
    *,
    get: Sequence[str] = ("nngp", "ntk"),
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    block_size: int | None = None,
    budget: Budget = Budget(),
    max_bytes: int = SWEEP_BYTES,
    should_stop: ShouldStop | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[int, dict[str, dict[str, Tensor]] | NonFiniteKernel]]:
    """For each architecture (by index, in groups that fit ``max_bytes``): its kernels
    ``{"train_train": {name: (N, N)}, "val_train": {name: (M, N)}}`` (the second only with
    ``x_val``), each equal to ``kernel_fn`` of that architecture alone, or the NonFiniteKernel it
    raised. ``should_stop()`` is asked before every layer of every block, and ``Stopped`` raised
    when it answers True; ``progress(done, total)`` is told as each architecture is taken. Blocks
    are ``kernel_fn``'s for the same ``block_size`` and ``budget``."""
    steps = Steps(len(architectures), should_stop, progress)
    for index, kernels in _kernels(architectures, x_train, x_val, tuple(get), dtype, device, block_size, budget,
                                   max_bytes, steps):
        yield index, kernels
        steps.advance()


def _kernels(architectures, x_train, x_val, get, dtype, device, block_size, budget, max_bytes, steps: Steps):
    device = resolve_device(device)
    x_train = as_points(x_train, dtype, device)
    x_val = None if x_val is None else as_points(x_val, dtype, device)
    check_points(x_train, x_val)
    n, m = x_train.shape[0], 0 if x_val is None else x_val.shape[0]
    per_architecture = len(get) * (n * n + m * n) * torch.finfo(dtype).bits // 8
    made: dict[int, str] = {}
    keys = [layer_keys(arch, made) for arch in architectures]
    order = sorted(range(len(architectures)), key=keys.__getitem__)  # shared prefixes side by side
    group_size = max(1, max_bytes // per_architecture)
    groups = [order[g:g + group_size] for g in range(0, len(order), group_size)]
    tries = [build_trie([architectures[i] for i in group], [keys[i] for i in group], spatial=x_train.ndim > 2)
             for group in groups]
    for roots in tries:  # every architecture, before any is computed
        check_architectures(roots, tuple(x_train.shape[1:]))
    for group, roots in zip(groups, tries):
        yield from _group_kernels(roots, group, x_train, x_val, get, block_size, budget, steps)


def _group_kernels(roots: list[Root], indices, x_train, x_val, get, block_size, budget, steps):
    n, point_shape = x_train.shape[0], tuple(x_train.shape[1:])
    failed: dict[int, NonFiniteKernel] = {}
    results = {index: {} for index in indices}  # index -> which -> its kernels stacked, (len(get), rows, n)
    for root in roots:
        size = block_size or default_block_size(root.sample, point_shape, x_train.dtype, x_train.device, budget)
        blocks = [("train_train", x_train, None, tile) for tile in tiles(n, None, size)]
        if x_val is not None:
            blocks += [("val_train", x_val, x_train, tile) for tile in tiles(x_val.shape[0], n, size)]
        for which, x1, x2, tile in blocks:
            i0, i1, j0, j1 = tile
            diagonal = x2 is None and i0 == j0
            other = None if diagonal else (x1 if x2 is None else x2)[j0:j1]
            whole = (i1 - i0, j1 - j0) == (x1.shape[0], n)
            for local, state, exact in walk(root, x1[i0:i1], other, get, steps):
                index = indices[local]
                if index in failed:
                    continue
                if whole and x2 is not None:  # one block is the whole matrix, as in kernel_fn: no copy
                    try:
                        results[index][which] = list(block_output(state, get, symmetric=False).values())
                    except NonFiniteKernel as error:
                        failed[index] = error
                    continue
                if which not in results[index]:
                    results[index][which] = _empty(len(get), x1, n)
                written = _write(results[index][which], tile, [getattr(state, name) for name in get], diagonal,
                                 symmetric=x2 is None, exact=exact)
                error = _non_finite(written, get)
                if error is not None:
                    failed[index] = error
    for index in indices:
        kernels = results.pop(index)
        yield index, failed.get(index) or {which: dict(zip(get, out)) for which, out in kernels.items()}


def _empty(count: int, x1: Tensor, n: int) -> Tensor:
    return torch.empty((count, x1.shape[0], n), dtype=x1.dtype, device=x1.device)


def _write(out: Tensor, tile, block: list[Tensor], diagonal: bool, symmetric: bool, exact: bool) -> Tensor:
    """One block of each kernel into ``out`` (the kernels stacked), and where it went. A diagonal
    block of x1 against itself is made exactly symmetric, (K + Kᵀ)/2 as ``kernel.block_output``
    makes it, with the sum written straight into ``out`` and every kernel halved in one pass, unless
    it is ``exact``ly symmetric already (then (K + Kᵀ)/2 is K: a copy); with ``symmetric`` (the
    matrix of x1 against itself) an off-diagonal block is mirrored below the diagonal too."""
    i0, i1, j0, j1 = tile
    target = out[:, i0:i1, j0:j1]
    symmetrize = diagonal and not exact
    for kernel, value in zip(target, block):
        if symmetrize:
            torch.add(value, value.T, out=kernel)
        else:
            kernel.copy_(value)
    if symmetrize:
        target.mul_(0.5)
    elif symmetric and not diagonal:
        out[:, j0:j1, i0:i1] = target.transpose(1, 2)
    return target


def _non_finite(block: Tensor, get: tuple[str, ...]) -> NonFiniteKernel | None:
    """The error of a block of stacked kernels that holds a NaN or ±inf, else None: one sum over
    all of them in the usual case, as ``kernel.block_output`` checks one kernel. Checked once
    written, so that an overflow in the symmetrizing sum is caught too."""
    if math.isfinite(block.sum()) or torch.isfinite(block).all():
        return None
    name = next(name for name, kernel in zip(get, block) if not torch.isfinite(kernel).all())
    return NonFiniteKernel(overflow_advice(f"the {name} kernel", block.dtype))


# -- metrics ----------------------------------------------------------------------------------


def log_marginal_likelihood(k_train: Tensor, y: Tensor, diag_reg: float) -> tuple[float, float, Factorization]:
    """(log p(Y), σ̂², the Cholesky factorization of A = K + εI) for the model in the module
    docstring, ε = ``diag_reg`` × mean diagonal of K. Raises NotPositiveDefinite."""
    fact = factorize(k_train, "nngp", diag_reg=diag_reg, method="cholesky", dtype=k_train.dtype,
                     device=k_train.device)
    n, k = y.shape
    whitened = torch.linalg.solve_triangular(fact.cholesky, y, upper=False)  # L⁻¹Y: tr(YᵀA⁻¹Y) = ‖L⁻¹Y‖²
    scale = float((whitened**2).sum()) / (n * k)
    log_det = 2.0 * float(torch.log(torch.diagonal(fact.cholesky)).sum())
    return -0.5 * (n * k * (1.0 + math.log(2.0 * math.pi * scale)) + k * log_det), scale, fact


def fit_diag_reg(k_train: Tensor, y: Tensor, search: tuple[float, float] = FIT_RANGE) -> float:
    """The relative ε maximizing log p(Y) (σ² at its optimum for each ε), between 10^search[0]
    and 10^search[1].

    One eigendecomposition K = U diag(s) Uᵀ makes every ε cost O(N): with r = ‖(UᵀY)_i‖²,
    tr(YᵀA⁻¹Y) = Σ r_i / (s_i + ε) and log det A = Σ log(s_i + ε). The best of a grid of
    ``FIT_GRID_PER_DECADE`` points a decade is refined by golden-section search between its grid
    neighbours (log p is smooth in log ε, but not unimodal over the whole range in general), to
    ``FIT_TOLERANCE`` decades. ε where some s_i + ε ≤ 0 (K's rounding negatives) is skipped. An
    answer at an end of the range says the likelihood still grows beyond it: at the low end, that
    the targets are fitted as noiseless (a kernel of high rank, targets in its span).
    """
    eig = factorize(k_train, "nngp", diag_reg=0.0, method="eigh", dtype=k_train.dtype, device=k_train.device)
    s = eig.evals.cpu().numpy()
    r = ((eig.evecs.mT @ y) ** 2).sum(dim=1).cpu().numpy()
    n, k = y.shape
    mean_diagonal = float(torch.diagonal(k_train).mean())

    def log_p(decades: float) -> float:
        a = s + mean_diagonal * 10.0**decades
        if a.min() <= 0:
            return -math.inf
        return -0.5 * (n * k * (1.0 + math.log(2.0 * math.pi * (r / a).sum() / (n * k))) + k * np.log(a).sum())

    lo, hi = search
    grid = np.linspace(lo, hi, int(round((hi - lo) * FIT_GRID_PER_DECADE)) + 1)
    values = [log_p(x) for x in grid]
    best = int(np.argmax(values))
    if not math.isfinite(values[best]):
        raise NotPositiveDefinite(f"K + εI is not positive definite for any diag_reg up to 1e{hi:g}")
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = log_p(c), log_p(d)
    while b - a > FIT_TOLERANCE:
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - golden * (b - a)
            fc = log_p(c)
        else:
            a, c, fc = c, d, fd
            d = a + golden * (b - a)
            fd = log_p(d)
    candidates = [(values[best], grid[best]), (fc, c), (fd, d)]
    return float(10.0 ** max(candidates)[1])


def metrics(kernels: Mapping[str, Mapping[str, Tensor]], y_train: Tensor, y_val: Tensor | None = None, *,
            diag_reg: float | str = "fit") -> dict:
    """The row's numbers (module docstring) from one architecture's kernels (``sweep_kernels``)."""
    k_train = kernels["train_train"]["nngp"]
    relative = fit_diag_reg(k_train, y_train) if diag_reg == "fit" else float(diag_reg)
    log_p, scale, nngp_fact = log_marginal_likelihood(k_train, y_train, relative)
    row = {"log_marginal_likelihood": log_p, "output_scale": scale, "diag_reg": relative}
    if y_val is not None:
        val_train = kernels["val_train"]
        ntk_fact = factorize(kernels["train_train"], "ntk", diag_reg=relative, method="cholesky",
                             dtype=k_train.dtype, device=k_train.device)
        for mode, fact in (("nngp", nngp_fact), ("ntk", ntk_fact)):
            mean = predict(fact, y_train, val_train, kernel=mode, t=None, compute_cov=False).mean
            row[f"{mode}_mse"] = float(((mean - y_val) ** 2).mean())
            if y_val.shape[1] >= 2:
                row[f"{mode}_accuracy"] = float((mean.argmax(1) == y_val.argmax(1)).double().mean())
    return row


def sweep(
    points: Sequence[SweepPoint],
    x_train,
    y_train,
    x_val=None,
    y_val=None,
    *,
    diag_reg: float | str = "fit",
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    block_size: int | None = None,
    budget: Budget = Budget(),
    max_bytes: int = SWEEP_BYTES,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> list[dict]:
    """One row per point, in their order: its key, then the metrics of the module docstring.

    ``diag_reg``: ε relative to the mean diagonal of the kernel, or "fit". ``progress(done,
    total)`` is told after each architecture's row; ``should_stop()`` is asked before every layer
    of every block and before each row, and ``Stopped`` raised when it answers True.
    """
    if (x_val is None) != (y_val is None):
        raise PredictError("give both x_val and y_val, or neither")
    if diag_reg != "fit" and not (isinstance(diag_reg, (int, float)) and math.isfinite(diag_reg) and diag_reg >= 0):
        raise PredictError(f"diag_reg must be a number >= 0 or 'fit', got {diag_reg!r}")
    device = resolve_device(device)
    x_train = as_points(x_train, dtype, device)
    y_train = _targets("y_train", y_train, x_train.shape[0], dtype, device)
    if x_val is not None:
        x_val = as_points(x_val, dtype, device)
        y_val = _targets("y_val", y_val, x_val.shape[0], dtype, device)
        if y_val.shape[1] != y_train.shape[1]:
            raise PredictError(f"y_val has {y_val.shape[1]} outputs but y_train has {y_train.shape[1]}")
    get = ("nngp", "ntk") if x_val is not None else ("nngp",)
    architectures = [point.architecture for point in points]
    rows: list[dict | None] = [None] * len(points)
    steps = Steps(len(points), should_stop, progress)
    for index, kernels in _kernels(architectures, x_train, x_val, get, dtype, device, block_size, budget, max_bytes,
                                   steps):
        steps.check()
        rows[index] = {**points[index].key, **_row(kernels, y_train, y_val, diag_reg)}
        steps.advance()
    return rows


def _row(kernels, y_train, y_val, diag_reg) -> dict:
    names = ["log_marginal_likelihood", "output_scale", "diag_reg"]
    if y_val is not None:
        names += [f"{mode}_{what}" for what in ("mse", "accuracy")[:1 + (y_val.shape[1] >= 2)]
                  for mode in ("nngp", "ntk")]
    try:
        if isinstance(kernels, NonFiniteKernel):
            raise kernels
        row = metrics(kernels, y_train, y_val, diag_reg=diag_reg)
    except (NonFiniteKernel, NotPositiveDefinite) as error:
        return {**dict.fromkeys(names), "error": str(error)}
    return {**{name: row[name] for name in names}, "error": None}


def _targets(name: str, y, points: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Targets as (N, k), checked against the N points they belong to."""
    y = as_points(y, dtype, device)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or y.shape[0] != points:
        raise PredictError(f"{name} must be ({points}, k) or ({points},), got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise PredictError(f"{name} contains non-finite values")
    return y
