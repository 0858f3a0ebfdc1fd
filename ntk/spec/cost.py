"""What a job will cost, before it runs: work units and peak memory, from the spec and shapes alone.

Torch-free (standard library and the spec models only), so the API can price a request for
admission without the engine. The model follows the engine's own structure:

* the service cuts a Gram matrix into tiles of ``tile`` points a side (``kernel.tiles``; for
  K(x1, x1) only the upper triangle), and ``kernel_fn`` cuts each tile into blocks of
  ``block_side`` points, each run through the whole layer stack;
* a block of b1 × b2 points carries, per kernel (NNGP, NTK), one number per pair of points times
  ``S`` spatial entries: S = 1 for dense networks, P (positions) when only same-position
  covariances are kept, P² when pooling needs every pair of positions
  (``Architecture.needs_full_spatial``); per point, the covariances cov1/cov2 hold P or P²
  (``Architecture.covariances_need_full_spatial``);
* each layer streams those tensors a number of times that depends on its kind: its ``Work`` is
  ``per_pair`` units per pair of points, ``per_point`` per point, and ``fixed`` per block (the
  interpreter's and the kernel launches' share, which dominates tiny blocks).

A unit is roughly one elementwise pass of one float64 number through memory, ~1 ns on the 2-core
EPYC the weights below were measured on (bench/cost_accuracy.py). ``calibrate`` in the engine
measures seconds per unit on the device at hand; ``estimate_seconds`` converts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import architecture as S
from .trie import build_trie

# Block sizing (kernel.default_block_size reads these): see ``block_side``.


@dataclass(frozen=True)
class Budget:
    """The memory a block of the recursion may use: ``block_bytes`` its whole working set,
    ``cache_bytes`` (CPU) one kernel tensor. The workers take them from the settings
    (NTK_BLOCK_BYTES, NTK_CACHE_BYTES) and hand them to the engine."""

    block_bytes: int = 1 << 30
    cache_bytes: int = 2 << 20


MAX_BLOCK = 1024
LIVE_COPIES = 10  # kernels and temporaries alive at once inside a layer, per pair entry

# Units per entry of one kernel tensor, per layer kind (measured on the EPYC, float64, 2 MiB blocks).
PASS = 1.0               # one elementwise pass (scale, add)
TAP_PASS = 1.3           # one filter tap's shifted add (addcmul with an edge mask)
RECTIFIER = 19.0         # Relu/LeakyRelu/ABRelu/Abs: gap, rsqrt, atan2, two products
CLOSED_FORM = {"Erf": 30.0, "Gelu": 38.0, "Sin": 25.0, "Sign": 26.0}
QUADRATURE_NODE = 26.0   # Elementwise: per entry and per node pair, with the NTK's φ' term
QUADRATURE_NODE_NNGP = 15.0
MATMUL_FLOP = 0.05       # a multiply-add pair inside BLAS, in units
SMALL_MATMUL_FLOP = 0.1   # the same in convolutions and batched products of a few channels
# On a CPU, a block whose kernel tensors outgrow the cache (one pair of large images) streams from
# memory: ×1.5; past glibc's mmap threshold (32 MiB, see ``allocator``) every temporary is also
# page-faulted in anew: ×3 (bench/cost_accuracy.py, 32×32 and 64×64 images).
OUT_OF_CACHE, OUT_OF_HEAP, HEAP_BYTES = 1.5, 3.0, 32 << 20
DRAW = 4.0               # one standard normal drawn for a Monte Carlo network
# Units of one tensor operation whatever its size (Python and dispatch; a layer makes 4–40 per
# block, 25–250 µs on the EPYC): what dominates blocks of a few points.
OP_OVERHEAD = 6_000.0
QUADRATURE_CHUNK_ELEMENTS = 1 << 22  # as layers.elementwise: entries × inner nodes per temporary
FEATURE_ELEMENTS = 1 << 26           # as monte_carlo: features of one batch of points


@dataclass(frozen=True)
class Work:
    """The work of a layer (or a stack) on one block of b1 × b2 points: ``per_pair``·b1·b2 +
    ``per_point``·(b1 + b2) + ``fixed`` units; it holds at most ``peak_per_pair``·b1·b2 +
    ``peak_fixed`` bytes at once. Adding two runs them one after the other."""

    per_pair: float = 0.0
    per_point: float = 0.0
    fixed: float = 0.0
    peak_per_pair: float = 0.0  # LIVE_COPIES tensors of the widest kernel
    peak_fixed: float = 0.0     # temporaries of a bounded size (quadrature chunks)

    def __add__(self, other: Work) -> Work:
        return Work(self.per_pair + other.per_pair, self.per_point + other.per_point, self.fixed + other.fixed,
                    max(self.peak_per_pair, other.peak_per_pair), max(self.peak_fixed, other.peak_fixed))

    def on(self, pairs: float, points: float, count: float) -> float:
        """Units on ``count`` blocks holding ``pairs`` pairs and ``points`` points in all."""
        return self.per_pair * pairs + self.per_point * points + self.fixed * count


@dataclass(frozen=True)
class Cost:
    """A job's (or part of a job's) estimated work and memory.

    ``units``: the work of all its tiles, in units (``estimate_seconds`` makes seconds);
    ``peak_bytes_per_tile``: the most memory one tile needs at once (its result and one block's
    working set); ``tiles``: how many tiles the service computes; ``blocks``: memory-bounded
    blocks inside them, summed (the cooperative stop is checked between their layers);
    ``units_per_tile``: the largest tile's work, which bounds a tile's duration; ``parts``: units
    by kind of work ("kernels", "monte_carlo", "solve"), summed when costs are added.
    """

    units: float
    peak_bytes_per_tile: int
    tiles: int
    blocks: int = 0
    units_per_tile: float = 0.0
    parts: dict[str, float] = field(default_factory=dict, compare=False)

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.units + other.units, max(self.peak_bytes_per_tile, other.peak_bytes_per_tile),
                    self.tiles + other.tiles, self.blocks + other.blocks,
                    max(self.units_per_tile, other.units_per_tile),
                    {name: self.parts.get(name, 0.0) + other.parts.get(name, 0.0) for name in {*self.parts, *other.parts}})


def estimate_seconds(cost: Cost, seconds_per_unit: float) -> float:
    """Seconds the job takes on one worker whose calibration (``engine.calibrate``) gave ``seconds_per_unit``."""
    return cost.units * seconds_per_unit


# -- the layer walk ----------------------------------------------------------------------------


@dataclass
class _Shape:
    """What the engine's KernelState holds at a point of the stack, for one pair of points."""

    spatial: tuple[int, ...]
    full: bool          # nngp/ntk keep every pair of positions
    cov_full: bool      # cov1/cov2 do too
    ntk: bool           # the NTK is computed
    ntk_zero: bool      # the NTK is still the inputs' zero (no affine layer yet)
    dtype_bytes: int
    channels: int = 1

    @property
    def positions(self) -> int:
        return math.prod(self.spatial)

    @property
    def pair_entries(self) -> int:
        """Numbers per pair of points in one kernel tensor: 1, P or P²."""
        return self.positions ** (2 if self.full else 1)

    @property
    def point_entries(self) -> int:
        return self.positions ** (2 if self.cov_full else 1)

    @property
    def kernels(self) -> int:
        """Kernel tensors a linear layer maps: the NNGP, and the NTK once it is nonzero."""
        return 1 + (self.ntk and not self.ntk_zero)

    def streamed(self, passes: float, kernels: int | None = None, ops: int = 2) -> Work:
        """``passes`` elementwise passes over each kernel tensor and the covariances."""
        kernels = self.kernels if kernels is None else kernels
        return Work(passes * kernels * self.pair_entries, passes * self.point_entries, ops * OP_OVERHEAD,
                    LIVE_COPIES * self.pair_entries * self.dtype_bytes)


# Each layer type's work: its rule, a function (layer, shape) -> Work that also moves the shape past the layer.
LAYER_WORK = S.PerLayerType("cost rule")


@LAYER_WORK.of(S.Dense)
def dense(layer: S.Dense, s: _Shape) -> Work:
    """K' = w² K + b², Θ' = K' + w² Θ: one pass (two with a bias) over each kernel entry."""
    return _affine(s, layer.b_std is not None, layer.out_dim)


def _affine(s: _Shape, bias: bool, width: int) -> Work:
    work = s.streamed(PASS * (1 + bias), kernels=1, ops=4) + s.streamed(PASS * s.ntk, kernels=1, ops=1)
    s.ntk_zero, s.channels = False, width
    return work


@LAYER_WORK.of(S.Conv)
def conv(layer: S.Conv, s: _Shape) -> Work:
    """Per spatial axis one shifted add per filter tap (same tap at both ends of a position pair),
    on NNGP and NTK, then Dense's affine: (Σ_axes w_a)·TAP_PASS·kernels + dense, per output entry."""
    strides = layer.strides or [1] * len(layer.filter_shape)
    taps = sum(layer.filter_shape)
    before = s.kernels
    s.spatial = S._window_output(s.spatial, layer.filter_shape, strides, layer.padding, (), "filter_shape")
    work = s.streamed(TAP_PASS * taps, kernels=before, ops=4 * taps)
    return work + _affine(s, layer.b_std is not None, layer.out_chan)


@LAYER_WORK.of(S.Relu, S.LeakyRelu, S.ABRelu, S.Abs)
def rectifier(layer, s: _Shape) -> Work:
    """Relu, LeakyRelu, ABRelu, Abs: the arc-cosine map (~RECTIFIER units) per NNGP entry, Θ·dot one
    pass; the covariances by the cheap diagonal map."""
    return Work(RECTIFIER * s.pair_entries + PASS * s.ntk * s.pair_entries, 3 * s.point_entries,
                14 * OP_OVERHEAD, LIVE_COPIES * s.pair_entries * s.dtype_bytes)


@LAYER_WORK.of(S.Erf, S.Gelu, S.Sin, S.Sign)
def closed_form(layer, s: _Shape) -> Work:
    """Erf, Gelu, Sin, Sign: their closed forms (CLOSED_FORM units per entry) on NNGP and on the
    covariances, plus the identical-points snap and Θ·dot."""
    weight = CLOSED_FORM[layer.type]
    return Work((weight + 6 * PASS + PASS * s.ntk) * s.pair_entries, weight * s.point_entries, 40 * OP_OVERHEAD,
                LIVE_COPIES * s.pair_entries * s.dtype_bytes)


@LAYER_WORK.of(S.Elementwise)
def quadrature(layer: S.Elementwise, s: _Shape) -> Work:
    """Elementwise(fn, degree): degree² evaluations of φ (and φ') per NNGP entry, QUADRATURE_NODE
    units each; the covariances by the 1-D rule (4·degree units), or the 2-D one when they keep
    every pair of positions. Entries go in chunks of QUADRATURE_CHUNK_ELEMENTS / (degree/2), each
    paying ~30 operations per outer node: spread over the chunk's entries."""
    node = QUADRATURE_NODE if s.ntk else QUADRATURE_NODE_NNGP
    degree2 = layer.degree**2
    chunk_overhead = 30 * layer.degree * OP_OVERHEAD
    chunk_entries = QUADRATURE_CHUNK_ELEMENTS / max(1, -(-layer.degree // 2))
    per_entry = node * degree2 + 6 * PASS + chunk_overhead / chunk_entries
    per_point = (QUADRATURE_NODE_NNGP * degree2 if s.cov_full else 4 * layer.degree) * s.point_entries
    # A chunk holds a handful of (entries × inner nodes) temporaries: nodes, weights, φ, φ', products.
    return Work(per_entry * s.pair_entries, per_point, chunk_overhead,
                LIVE_COPIES * s.pair_entries * s.dtype_bytes, 6 * QUADRATURE_CHUNK_ELEMENTS * s.dtype_bytes)


@LAYER_WORK.of(S.LayerNorm)
def layer_norm(layer: S.LayerNorm, s: _Shape) -> Work:
    """K' = K / sqrt((ε + v) (ε + v')): the scale's two passes, one product per kernel."""
    return s.streamed(PASS * (2 + s.kernels), kernels=1, ops=12)


@LAYER_WORK.of(S.AvgPool)
def avg_pool(layer: S.AvgPool, s: _Shape) -> Work:
    """Per spatial axis, one shifted add per window offset at each end of a position pair
    (2·Σ_axes w taps), then the 1/|w|² scale, on the pooled (output) entries."""
    strides = layer.strides or [1] * len(layer.window_shape)
    s.spatial = S._window_output(s.spatial, layer.window_shape, strides, layer.padding, (), "window_shape")
    taps = 2 * sum(layer.window_shape)
    return s.streamed(PASS * (taps + 1), kernels=1 + s.ntk, ops=3 * taps)


@LAYER_WORK.of(S.GlobalAvgPool)
def global_avg_pool(layer: S.GlobalAvgPool, s: _Shape) -> Work:
    """K' = mean over every pair of positions: one read of each kernel tensor."""
    work = s.streamed(PASS, kernels=1 + s.ntk, ops=3)
    s.spatial, s.full, s.cov_full = (), False, False
    return work


@LAYER_WORK.of(S.Flatten)
def flatten(layer: S.Flatten, s: _Shape) -> Work:
    """K' = mean over equal positions: reads P numbers per pair (the diagonal when P² are kept)."""
    work = Work(PASS * (1 + s.ntk) * s.positions, PASS * s.positions, 3 * OP_OVERHEAD)
    s.channels *= s.positions
    s.spatial, s.full, s.cov_full = (), False, False
    return work


@LAYER_WORK.of(S.Identity)
def identity(layer, s: _Shape) -> Work:
    """y = x: nothing."""
    return Work()


@LAYER_WORK.of(S.Residual)
def residual(layer: S.Residual, s: _Shape) -> Work:
    """Branch and shortcut run on the same input; their kernels are summed (one pass each)."""
    branch, shortcut = _copy(s), _copy(s)
    work = _stack(layer.layers, branch) + _stack(layer.shortcut or [], shortcut)
    s.__dict__.update(branch.__dict__)
    s.ntk_zero = branch.ntk_zero and shortcut.ntk_zero
    return work + s.streamed(PASS, ops=4)


def _copy(s: _Shape) -> _Shape:
    return _Shape(**s.__dict__)


LAYER_WORK.complete()


def _stack(layers, s: _Shape) -> Work:
    work = Work()
    for layer in layers:
        work = work + LAYER_WORK[layer.type](layer, s)
    return work


def input_work(s: _Shape, channels: int) -> Work:
    """K(x, x') = <x, x'>/C: a matmul of 2·C flops per kernel entry, the identical-points snap
    (~5 passes; ~10 when a batched einsum over positions computes it), the NTK's zeros; per point
    its fingerprint and covariance."""
    passes = 5 * PASS + (5 * PASS if s.spatial and not s.full else 0) + PASS * s.ntk
    per_pair = passes * s.pair_entries + MATMUL_FLOP * 2 * channels * s.pair_entries
    per_point = 10 * PASS * channels * s.positions + MATMUL_FLOP * 2 * channels * s.point_entries
    return Work(per_pair, per_point, 30 * OP_OVERHEAD, LIVE_COPIES * s.pair_entries * s.dtype_bytes)


def block_work(arch: S.Architecture, point_shape: tuple[int, ...], get: tuple[str, ...] = ("nngp", "ntk"),
               dtype_bytes: int = 8) -> Work:
    """The work of one block through the whole stack, as a function of its b1, b2 (``Work.on``):
    the input kernel, every layer, and the finite checks and symmetrization of the results."""
    s = _input_shape(arch, tuple(point_shape), get, dtype_bytes)
    return input_work(s, point_shape[-1]) + _stack(arch.layers, s) + _output_work(get)


def _input_shape(arch: S.Architecture, point_shape: tuple[int, ...], get: tuple[str, ...], dtype_bytes: int) -> _Shape:
    full = arch.needs_full_spatial() and len(point_shape) > 1
    return _Shape(point_shape[:-1], full, full and arch.covariances_need_full_spatial(), "ntk" in get, True,
                  dtype_bytes, point_shape[-1])


def _output_work(get: tuple[str, ...]) -> Work:
    """The finite checks and symmetrization of a stack's results."""
    return Work(2 * PASS * len(get), 0.0, 4 * len(get) * OP_OVERHEAD)


def sweep_block_works(architectures: list[S.Architecture], point_shape: tuple[int, ...],
                      get: tuple[str, ...] = ("nngp", "ntk"), dtype_bytes: int = 8
                      ) -> list[tuple[S.Architecture, Work]]:
    """The work of one block through every architecture of a sweep as ntk.engine.sweep computes
    them, per root of their trie (ntk.spec.trie: a sample architecture, and the work): the input
    kernel once, each layer of the trie of shared prefixes once, and every architecture's results
    checked and symmetrized. A depth grid 1…D is D blocks and D readouts, not D(D+1)/2 blocks."""
    point_shape = tuple(point_shape)
    works = []
    for root in build_trie(architectures, spatial=len(point_shape) > 1):
        start = _input_shape(root.sample, point_shape, get, dtype_bytes)
        work = input_work(start, point_shape[-1])
        pending = [(child, start) for child in root.node.children.values()]
        while pending:
            node, s = pending.pop()
            after = _copy(s)  # a cost rule moves the shape it is given past its layer
            work = work + LAYER_WORK[node.layer.type](node.layer, after)
            for _ in node.ends:
                work = work + _output_work(get)
            pending += [(child, after) for child in node.children.values()]
        works.append((root.sample, work))
    return works


def block_side(arch: S.Architecture, point_shape: tuple[int, ...], dtype_bytes: int = 8, on_gpu: bool = False,
               budget: Budget = Budget()) -> int:
    """Points per block side: what keeps a layer's working set in cache (CPU) or memory (GPU).

    A pair of points carries one number per kernel for dense networks, one per position when
    only same-position covariances are tracked, and one per pair of positions when pooling needs
    them all: 32×32 images make that a million. Every layer streams each kernel tensor of the
    block several times (tap sums, then the nonlinearity's dozen elementwise passes), so on a CPU
    the block is sized for one kernel tensor to take ``budget.cache_bytes`` (2 MiB, near the two
    cores' L2 caches: the fastest of 1–32 MiB for the CNNs of bench/harness.py, within 10% for
    FC-5; from 32 MiB on, temporaries leave the reused heap, see ``allocator``, and run 5× slower).
    A GPU gains from large kernels instead, so there the whole working set (about
    ``LIVE_COPIES`` tensors) fills ``budget.block_bytes``. Blocks are capped at MAX_BLOCK so that
    symmetric matrices save work by computing only upper blocks.
    """
    positions = math.prod(point_shape[:-1])
    per_pair = positions**2 if arch.needs_full_spatial() else positions
    bytes_per_pair = per_pair * dtype_bytes
    per_tensor = budget.block_bytes / LIVE_COPIES
    if not on_gpu:
        per_tensor = min(budget.cache_bytes, per_tensor)
    return max(1, min(MAX_BLOCK, int((per_tensor / bytes_per_pair) ** 0.5)))


def balanced(n: int, size: int) -> list[tuple[int, int]]:
    """``n`` points in ceil(n/size) runs of (nearly) equal sizes, at most ``size``: (start, stop) each."""
    count = -(-n // size)
    bounds = [n * b // count for b in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass(frozen=True)
class Grid:
    """Blocks covering an n1 × n2 matrix (or the upper triangle of n × n): how many, and the sums
    of b1·b2 (``pairs``) and of b1 + b2 (``points``) over them."""

    count: int
    pairs: int
    points: int


def _run_sizes(n: int, size: int) -> tuple[int, int, int]:
    """(runs, Σ s, Σ s²) of ``balanced(n, size)`` in closed form: r runs of q + 1 and the rest of q."""
    runs = -(-n // size)
    q, r = divmod(n, runs)
    return runs, n, r * (q + 1) ** 2 + (runs - r) * q * q


def grid(n1: int, n2: int | None, size: int) -> Grid:
    """``kernel.tiles(n1, n2, size)`` summarized; n2 None: the upper triangle of K(x1, x1), a
    diagonal block computed whole (its points counted once: it has no second covariance)."""
    rows, total, squares = _run_sizes(n1, size)
    if n2 is None:
        return Grid(rows * (rows + 1) // 2, (total * total + squares) // 2, rows * total)
    cols, total2, _ = _run_sizes(n2, size)
    return Grid(rows * cols, total * total2, cols * total + rows * total2)


def _size_counts(n: int, size: int) -> dict[int, int]:
    """How many runs of each size ``balanced(n, size)`` makes (at most two sizes)."""
    runs = -(-n // size)
    q, r = divmod(n, runs)
    return {k: v for k, v in {q + 1: r, q: runs - r}.items() if v}


def tile_grid(n1: int, n2: int | None, tile: int, block: int) -> tuple[Grid, int]:
    """The blocks of every tile the service computes, summed, and the number of tiles: a tile is
    ``kernel_fn`` on its rows and columns, itself cut into blocks of ``block`` a side."""
    rows = _size_counts(n1, tile)
    blocks = [Grid(0, 0, 0)]
    tiles = 0
    if n2 is None:
        sizes = sorted(rows.items())
        for i, (a, count_a) in enumerate(sizes):
            blocks.append(_times(grid(a, None, block), count_a))                    # diagonal tiles
            blocks.append(_times(grid(a, a, block), count_a * (count_a - 1) // 2))  # off-diagonal, equal sizes
            for b, count_b in sizes[i + 1:]:
                blocks.append(_times(grid(a, b, block), count_a * count_b))
        runs = sum(rows.values())
        tiles = runs * (runs + 1) // 2
    else:
        for a, count_a in _size_counts(n1, tile).items():
            for b, count_b in _size_counts(n2, tile).items():
                blocks.append(_times(grid(a, b, block), count_a * count_b))
                tiles += count_a * count_b
    total = Grid(sum(g.count for g in blocks), sum(g.pairs for g in blocks), sum(g.points for g in blocks))
    return total, tiles


def _times(g: Grid, k: int) -> Grid:
    return Grid(g.count * k, g.pairs * k, g.points * k)


# -- costs -----------------------------------------------------------------------------------------

KERNELS = ("nngp", "ntk")


def kernel_cost(arch: S.Architecture, point_shape: tuple[int, ...], n1: int, n2: int | None = None,
                get: tuple[str, ...] = KERNELS, dtype_bytes: int = 8, tile: int = 2048,
                on_gpu: bool = False) -> Cost:
    """The analytic kernels K(x1, x2) (n2 None: K(x1, x1), upper tiles only) in tiles of ``tile``.

    units = Σ over blocks of ``block_work`` (per pair·b1·b2 + per point·(b1 + b2) + fixed);
    peak per tile = the tile's result (``get`` kernels of tile² numbers) + one block's working
    set (LIVE_COPIES tensors of its widest layer, and bounded temporaries such as quadrature chunks).
    """
    point_shape = tuple(point_shape)
    work, side = block_work(arch, point_shape, get, dtype_bytes), block_side(arch, point_shape, dtype_bytes, on_gpu)
    return _tiled(work, side, n1, n2, tile, len(get) * dtype_bytes, on_gpu)


def sweep_kernel_cost(architectures: list[S.Architecture], point_shape: tuple[int, ...], n1: int,
                      n2: int | None = None, get: tuple[str, ...] = KERNELS, dtype_bytes: int = 8, tile: int = 2048,
                      on_gpu: bool = False) -> Cost:
    """``kernel_cost`` of a sweep's architectures computed together, shared prefixes once
    (``sweep_block_works``), each kind of input state in blocks of its own side."""
    point_shape = tuple(point_shape)
    costs = [_tiled(work, block_side(sample, point_shape, dtype_bytes, on_gpu), n1, n2, tile, len(get) * dtype_bytes,
                    on_gpu) for sample, work in sweep_block_works(architectures, point_shape, get, dtype_bytes)]
    return sum(costs[1:], costs[0])


def _tiled(work: Work, side: int, n1: int, n2: int | None, tile: int, result_bytes: int, on_gpu: bool) -> Cost:
    """``kernel_cost`` given the work of a block and the block side; ``result_bytes`` per entry."""
    blocks, tiles = tile_grid(n1, n2, tile, side)
    t1, t2 = min(n1, tile), min(n1 if n2 is None else n2, tile)
    b1, b2 = min(t1, side), min(t2, side)
    if not on_gpu:
        work = _streamed_from_memory(work, b1 * b2 * work.peak_per_pair / LIVE_COPIES)
    one_tile = grid(t1, t2, side)
    units = work.on(blocks.pairs, blocks.points, blocks.count)
    peak = result_bytes * t1 * t2 + b1 * b2 * work.peak_per_pair + work.peak_fixed
    return Cost(units, int(peak), tiles, blocks.count, work.on(one_tile.pairs, one_tile.points, one_tile.count),
                {"kernels": units})


def _streamed_from_memory(work: Work, tensor_bytes: float) -> Work:
    """``work`` on a CPU whose blocks hold kernel tensors of ``tensor_bytes``: slower per pair
    once they leave the cache (OUT_OF_CACHE: the default budget's cache_bytes) and the reused heap
    (OUT_OF_HEAP)."""
    cache_bytes = Budget().cache_bytes
    factor = OUT_OF_HEAP if tensor_bytes > HEAP_BYTES else OUT_OF_CACHE if tensor_bytes > cache_bytes else 1.0
    return Work(work.per_pair * factor, work.per_point, work.fixed, work.peak_per_pair, work.peak_fixed)


def tile_side(arch: S.Architecture, point_shape: tuple[int, ...], seconds_per_unit: float, target_s: float,
              max_side: int = 2048, get: tuple[str, ...] = KERNELS, dtype_bytes: int = 8,
              on_gpu: bool = False, memory_bytes: int | None = None) -> int:
    """The largest tile side (≤ ``max_side``) whose full off-diagonal tile takes at most ``target_s``
    seconds (and, given ``memory_bytes``, fits in it); at least 1, whatever one pair costs."""
    point_shape = tuple(point_shape)
    work, block = block_work(arch, point_shape, get, dtype_bytes), block_side(arch, point_shape, dtype_bytes, on_gpu)

    def fits(side: int) -> bool:
        cost = _tiled(work, block, side, side, side, len(get) * dtype_bytes, on_gpu)
        return (cost.units * seconds_per_unit <= target_s
                and (memory_bytes is None or cost.peak_bytes_per_tile <= memory_bytes))

    low, high = 1, max_side
    if fits(high):
        return high
    while high - low > 1:  # fits(low) or low == 1; not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def network_flops(arch: S.Architecture, point_shape: tuple[int, ...]) -> list[tuple[int, int, int, int, int]]:
    """Every affine layer of the finite network as (fan_in channels, taps, out channels, input
    positions, output positions), in forward order, Residual paths included (the shape walk's)."""
    return list(arch.walk(point_shape).affine)


def monte_carlo_cost(arch: S.Architecture, point_shape: tuple[int, ...], n1: int, n2: int | None, samples: int,
                     get: tuple[str, ...] = KERNELS, dtype_bytes: int = 8) -> Cost:
    """``samples`` finite networks, each: its parameters drawn (DRAW units each), a forward pass of
    every point (2·C·taps·O·P_out flops per affine layer) and, for the NTK, one backward pass per
    output (k more), then the contractions: K̂ = f fᵀ/k (2·k flops per pair) and per affine layer
    Θ̂ by the cheaper of position Gram matrices and per-example weight gradients, as
    ``monte_carlo._layer_ntk`` chooses. The whole matrix is one tile."""
    point_shape = tuple(point_shape)
    layers = network_flops(arch, point_shape)
    k = layers[-1][2]
    ntk = "ntk" in get
    points = n1 + (0 if n2 is None else n2)
    m = n1 if n2 is None else n2
    pairs = n1 * m if n2 is not None else n1 * (n1 + 1) // 2 * 2
    forward = sum(2 * c * t * o * p_out for c, t, o, _, p_out in layers)
    spatial = any(p_out > 1 for *_, p_out in layers)
    flop = SMALL_MATMUL_FLOP if spatial else MATMUL_FLOP
    per_point = forward * (1 + (2 * k if ntk else 0)) * flop + 20 * PASS * sum(o * p for _, _, o, _, p in layers)
    contract = 2 * k * pairs
    if ntk:
        for c, t, o, p_in, p_out in layers:
            if p_out == 1 and t == 1:
                contract += pairs * 2 * (k * o + c + k * o)
            else:
                gram = pairs * (p_out * p_out * (k * o + t) + p_in * p_in * c)
                grads = points * k * o * c * t * p_out + pairs * k * o * c * t
                contract += 2 * min(gram, grads) * SMALL_MATMUL_FLOP / MATMUL_FLOP
    draws = arch.parameters(point_shape) * DRAW
    per_sample = draws + per_point * points + contract * MATMUL_FLOP + 40 * OP_OVERHEAD * len(layers)
    features = sum(c * p_in + k * o * p_out for c, _, o, p_in, p_out in layers) if ntk else sum(
        o * p_out for _, _, o, _, p_out in layers)
    batch = min(points, max(1, FEATURE_ELEMENTS // max(1, 2 * features)))
    peak = (2 * len(get) + 2) * n1 * m * 8 + 2 * batch * 2 * features * dtype_bytes
    units = samples * per_sample
    return Cost(units, int(peak), 1, samples, units, {"monte_carlo": units})


def prediction_cost(n_train: int, n_test: int, outputs: int = 1, compute_cov: bool = False,
                    method: str = "cholesky", times: int = 1) -> Cost:
    """The solve for predictions, in BLAS flops: the factorization of the N × N train kernel
    (Cholesky N³/3; eigh ~4N³ for finite times), then per time the mean (two triangular solves of
    N²·k each, or two products with the eigenvectors, and the M × N × k product) and, with
    ``compute_cov``, the M × M covariance (N²·M for the solve, N·M² for the product)."""
    n, m, k = n_train, n_test, outputs
    factor = n**3 / 3 if method == "cholesky" else 4 * n**3
    mean = 2 * n * n * k + 2 * m * n * k
    cov = (n * n * m + n * m * m) if compute_cov else 0
    units = MATMUL_FLOP * 2 * (factor + times * (mean + cov))
    peak = 8 * (2 * n * n + m * n + (m * m if compute_cov else 0))
    return Cost(units, int(peak), 1, 1, units, {"solve": units})


def prediction_job_cost(arch: S.Architecture, point_shape: tuple[int, ...], n_train: int, n_test: int,
                        outputs: int = 1, compute_cov: bool = False, method: str = "cholesky", times: int = 1,
                        dtype_bytes: int = 8, tile: int = 2048, on_gpu: bool = False) -> Cost:
    """A whole prediction job: the kernel blocks it needs (train-train, symmetric; test-train;
    test-test with ``compute_cov``, symmetric) and the solve (``prediction_cost``)."""
    cost = (kernel_cost(arch, point_shape, n_train, None, dtype_bytes=dtype_bytes, tile=tile, on_gpu=on_gpu)
            + kernel_cost(arch, point_shape, n_test, n_train, dtype_bytes=dtype_bytes, tile=tile, on_gpu=on_gpu))
    if compute_cov:
        cost = cost + kernel_cost(arch, point_shape, n_test, None, dtype_bytes=dtype_bytes, tile=tile, on_gpu=on_gpu)
    return cost + prediction_cost(n_train, n_test, outputs, compute_cov, method, times)
