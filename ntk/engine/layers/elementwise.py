"""Elementwise nonlinearities: y = φ(x) applied to every entry.

If (u, v) are jointly Gaussian pre-activations with Var u = q1, Var v = q2 and Cov(u, v) = c, the
layer maps the kernels to
    K' = E[φ(u) φ(v)],        Θ' = Θ · E[φ'(u) φ'(v)].
Each nonlinearity below supplies that pair as a function ``(c, q1, q2) -> (K', dot)`` with
``dot = E[φ'(u) φ'(v)]``, in closed form where one exists. The inputs must be Gaussian: the
layer before must be Dense or Conv (checked by the spec).

Reference: neural-tangents ``_src/stax/elementwise.py``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np

import torch
from torch import Tensor

from ntk.spec import architecture as spec
from ntk.spec.cost import QUADRATURE_CHUNK_ELEMENTS  # elements of one quadrature temporary (entries × inner nodes)
from .table import LAYERS
from ..state import KernelState, pair_ends, position_variances, variance_pairs

PairFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def apply_elementwise(k: KernelState, pair_fn: PairFn, diagonal_fn: Callable[[Tensor], Tensor] | None = None,
                      self_pair_fn: PairFn | None = None, keep_identical: bool = True) -> KernelState:
    """Map cov1, nngp, cov2 through ``pair_fn`` and scale Θ by its derivative term.

    ``diagonal_fn(q) = E[φ(u)²]`` is the cheaper exact map for entries that pair a position with
    itself; neural-tangents uses it for cov1/cov2 when only same-position variances are kept, and
    so do we, to agree with it to the last digit. ``self_pair_fn`` (default ``pair_fn``) maps
    cov1/cov2 otherwise; it may skip the derivative term, which they never need.

    ``keep_identical``: pairs of identical points (perfectly correlated with equal variances, to
    8 ulps: ``correlation_gap``) take the first point's new variance as their covariance, so they
    stay identical through the next layer. ``pair_fn`` and ``diagonal_fn`` are different formulas
    that agree only to a few ulps, and in the chaotic phase (w_std² E[φ'²] > 1) the next layers
    amplify such a difference by that factor each: 1e16 over 300 Erf layers, enough to push c
    past sqrt(q1 q2). The rectifiers pass False: at θ = 0 their pair formula is their diagonal one.
    """
    self_pair_fn = self_pair_fn or pair_fn
    (q11a, q11b), (q12a, q12b), pair22 = variance_pairs(k)
    nngp, dot = pair_fn(k.nngp, q12a, q12b)

    def self_cov(cov: Tensor, qa: Tensor, qb: Tensor) -> Tensor:
        if diagonal_fn is not None and not k.cov_full_spatial:
            return diagonal_fn(cov)
        return self_pair_fn(cov, qa, qb)[0]

    cov1 = self_cov(k.cov1, q11a, q11b)
    if keep_identical:
        identical = perfectly_correlated(correlation_gap(k.nngp, q12a, q12b)) & (
            torch.abs(q12a - q12b) <= 8 * torch.finfo(q12a.dtype).eps * q12a)
        new_variances = position_variances(cov1, k.cov_full_spatial, k.spatial_ndim)
        variance, _ = pair_ends(new_variances, new_variances, 2,
                                k.full_spatial, k.spatial_ndim)
        nngp = torch.where(identical, variance, nngp)
    return k.replace(
        nngp=nngp,
        ntk=None if k.ntk is None else k.ntk * dot,
        cov1=cov1,
        cov2=None if pair22 is None else self_cov(k.cov2, *pair22),
        is_gaussian=False,
    )


# -- the angle between two pre-activations ---------------------------------------------------


def perfectly_correlated(gap: Tensor) -> Tensor:
    """Where ``correlation_gap`` says two pre-activations are one up to a factor (u = ±a·v)."""
    return gap <= 0


def correlation_gap(c: Tensor, q1: Tensor, q2: Tensor) -> Tensor:
    """q1 q2 (1 − 8ε) − c²: the Cauchy–Schwarz gap, read as ≤ 0 within 8 ulps of perfect correlation.

    The angle θ between two pre-activations is arctan2(sqrt(q1 q2 − c²), c). For two identical
    points c, q1 and q2 are one number computed along different paths (a matmul entry and a row
    sum of squares, a closed form for pairs and one for variances), equal only to a few ulps; the
    square root turns a residue of ε q1 q2 into θ ≈ √ε = 1e-8 (float64) or 2e-4 (float32), and
    every layer after adds its own. Reading correlations within 8 ulps of 1 as exactly 1 gives
    θ = 0 for them; for distinct points it moves θ no more than rounding c by 8 ulps would.
    The factor is split between the two variances (√(1 − 8ε) on each, one variance per point: it
    costs nothing), so that the pairs (i, j) and (j, i) of a block of points against themselves get
    one gap to the bit, and a symmetric kernel stays symmetric (``layers.KEEPS_SYMMETRY``).
    """
    half_snap = math.sqrt(1.0 - 8.0 * torch.finfo(c.dtype).eps)
    return torch.mul(q1 * half_snap, q2 * half_snap).sub_(c * c)


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(max(x, 0)): q1 q2 − c² is ≥ 0 mathematically but can round below zero on the diagonal."""
    return torch.sqrt(torch.clamp(x, min=0.0))


def safe_arctan2(y: Tensor, x: Tensor, fill_zero: float) -> Tensor:
    """arctan2 with a chosen value at (0, 0), where the angle between two zero vectors is undefined.

    arctan2(sqrt(q1 q2 − c²), c) is the angle between the two inputs; unlike arccos(c / sqrt(q1
    q2)) it stays accurate near the diagonal, where c² ≈ q1 q2.
    """
    angle = torch.atan2(y, x)
    return torch.where((y == 0) & (x == 0), torch.full_like(angle, fill_zero), angle)


# -- rectifiers ------------------------------------------------------------------------------


def ab_relu_pair(a: float, b: float) -> PairFn:
    """φ(x) = a·min(x, 0) + b·max(x, 0), with θ the angle between u and v (Cho & Saul 2009):

    K' = (a − b)²/(2π) · sqrt(q1 q2 − c²) + ((a² + b²)/2 − (a − b)²/(2π) · θ) · c,
    dot = (a² + b²)/2 − (a − b)²/(2π) · θ.
    """
    factor = (a - b) ** 2 / (2 * math.pi)
    mean_slope2 = (a**2 + b**2) / 2

    def pair(c: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        # In place on fresh temporaries: this runs on every entry of every tile, and memory
        # traffic, not arithmetic, is its cost. Identical points get gap ≤ 0, hence θ = 0
        # exactly (``correlation_gap``): the angle's √ would otherwise blow their few-ulp
        # disagreement up to θ ≈ 1e-8 and, since dot is linear in θ, compound it with depth.
        gap = correlation_gap(c, q1, q2).clamp_(min=torch.finfo(c.dtype).tiny)
        # √gap as gap·rsqrt(gap), 3× faster than sqrt in float64 on CPUs (≤ 2 ulp). Clamping at
        # the smallest normal number instead of 0 keeps it finite: a zero root becomes ~1e-154,
        # below the last bit of any kernel value, and two zero-variance points (c = 0) get
        # θ = π/2, the angle neural-tangents fills in for them.
        root = torch.rsqrt(gap).mul_(gap)
        dot = torch.rsub(torch.atan2(root, c), mean_slope2, alpha=factor)
        return root.mul_(factor).addcmul_(dot, c), dot

    return pair


@LAYERS.of(spec.ABRelu)
def ab_relu(layer: spec.ABRelu, k: KernelState, parameterization: str) -> KernelState:
    """ABRelu(a, b) = a·min(x, 0) + b·max(x, 0); on the diagonal K' = (a² + b²)/2 · q."""
    return _rectifier(layer.a, layer.b, k)


@LAYERS.of(spec.Relu)
def relu(layer: spec.Relu, k: KernelState, parameterization: str) -> KernelState:
    """Relu = ABRelu(0, 1): the arc-cosine kernel of degree 1."""
    return _rectifier(0.0, 1.0, k)


@LAYERS.of(spec.LeakyRelu)
def leaky_relu(layer: spec.LeakyRelu, k: KernelState, parameterization: str) -> KernelState:
    """LeakyRelu(α) = ABRelu(α, 1)."""
    return _rectifier(layer.alpha, 1.0, k)


@LAYERS.of(spec.Abs)
def abs_(layer: spec.Abs, k: KernelState, parameterization: str) -> KernelState:
    """Abs = ABRelu(−1, 1)."""
    return _rectifier(-1.0, 1.0, k)


def _rectifier(a: float, b: float, k: KernelState) -> KernelState:
    mean_slope2 = (a**2 + b**2) / 2
    return apply_elementwise(k, ab_relu_pair(a, b), lambda q: mean_slope2 * q, keep_identical=False)


# -- smooth closed forms -----------------------------------------------------------------------


def erf_pair(a: float, b: float, c: float) -> PairFn:
    """φ(x) = a·erf(b x) + c, the arcsine kernel (Williams 1997). With q̃ = b² q and c̃ = b² c,

    K' = a² · (2/π) · arctan2(2 c̃, sqrt((1 + 2 q̃1)(1 + 2 q̃2) − 4 c̃²)) + c²,
    dot = a² b² · (4/π) / sqrt((1 + 2 q̃1)(1 + 2 q̃2) − 4 c̃²).

    The output shift c adds c² to every covariance (erf is odd, so E[erf] = 0) and leaves Θ alone.
    As neural-tangents, the kernels are scaled by b² first and the square root is clamped at 0.
    """
    factor = 2 / math.pi
    a2, b2, c2 = a**2, b**2, c**2

    def pair(cov: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        cov, q1, q2 = b2 * cov, b2 * q1, b2 * q2
        root = safe_sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * cov**2)
        nngp = factor * torch.atan2(2 * cov, root)
        dot = (2 * factor / root) * b2
        return a2 * nngp + c2, a2 * dot

    return pair


@LAYERS.of(spec.Erf)
def erf(layer: spec.Erf, k: KernelState, parameterization: str) -> KernelState:
    """Erf(a, b, c): y = a·erf(b x) + c; on the diagonal K' = a² (2/π) arctan(q̃ / sqrt(q̃ + 1/4)) + c².

    Reference: neural-tangents ``stax.Erf``.
    """
    a2, b2, c2 = layer.a**2, layer.b**2, layer.c**2
    factor = 2 / math.pi

    def diagonal(q: Tensor) -> Tensor:
        q = b2 * q
        return a2 * (factor * torch.atan2(q, torch.sqrt(q + 0.25))) + c2

    return apply_elementwise(k, erf_pair(layer.a, layer.b, layer.c), diagonal)


def gelu_pair(cov: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
    """φ(x) = x·Φ(x) (Tsuchida et al. 2020, "Avoiding kernel fixed points"). With p = q1 q2,
    p⁺ = (q1 + 1)(q2 + 1), δ² = p⁺ − c² and α = arctan2(c, δ):

    K' = [(c² + p δ²) / (p⁺ δ) + c α] / (2π) + c / 4,
    dot = 1/4 + α/(2π) + c / (2π δ) · (1/δ² + (1 − p)/p⁺ + 1).
    """
    prod = q1 * q2
    prod_plus_1 = (q1 + 1) * (q2 + 1)
    delta_squared = prod_plus_1 - cov**2
    delta = safe_sqrt(delta_squared)
    angles = torch.atan2(cov, delta)
    nngp = (cov**2 + prod * delta_squared) / (prod_plus_1 * delta)
    nngp = (nngp + cov * angles) / (2 * math.pi) + 0.25 * cov
    second = 0.25 + angles / (2 * math.pi)
    first = 1 / delta_squared + (1 - prod) / prod_plus_1 + 1
    first = first * (cov / delta / (2.0 * math.pi))
    return nngp, first + second


def _gelu_diagonal(q: Tensor) -> Tensor:
    """E[gelu(u)²] = q · (1/4 + [q / ((q + 1) sqrt(1 + 2q)) + arctan(q / sqrt(1 + 2q)) / 2] / π)."""
    root = torch.sqrt(1.0 + 2.0 * q)
    out = q / ((q + 1.0) * root) + torch.atan2(q, root) / 2
    return (out / math.pi + 0.25) * q


@LAYERS.of(spec.Gelu)
def gelu(layer: spec.Gelu, k: KernelState, parameterization: str) -> KernelState:
    """Gelu(approximate): y = x·Φ(x). ``approximate`` (the tanh form) changes only the finite-width
    function in neural-tangents, not its kernel, so it is ignored here too.

    Reference: neural-tangents ``stax.Gelu``.
    """
    return apply_elementwise(k, gelu_pair, _gelu_diagonal)


def sin_pair(a: float, b: float, c: float) -> PairFn:
    """φ(x) = a·sin(b x + c). With s± = exp(b² (−(q1 + q2)/2 ± cov)) and s₋ carrying cos(2c):

    K' = a²/2 · (s₊ − s₋ cos 2c),   dot = a² b²/2 · (s₊ + s₋ cos 2c).
    """
    half_a2, b2, cos2c = a**2 / 2.0, b**2, math.cos(2 * c)

    def pair(cov: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        total = q1 + q2
        s1 = torch.exp(b2 * (-0.5 * total + cov))
        s2 = torch.exp(b2 * (-0.5 * total - cov)) * cos2c
        return half_a2 * (s1 - s2), half_a2 * b2 * (s1 + s2)

    return pair


@LAYERS.of(spec.Sin)
def sin(layer: spec.Sin, k: KernelState, parameterization: str) -> KernelState:
    """Sin(a, b, c): y = a·sin(b x + c); on the diagonal K' = a²/2 · (1 − exp(−2 b² q) cos 2c).

    Reference: neural-tangents ``stax.Sin``.
    """
    half_a2, b2, cos2c = layer.a**2 / 2.0, layer.b**2, math.cos(2 * layer.c)

    def diagonal(q: Tensor) -> Tensor:
        return half_a2 * (1.0 - torch.exp(-2 * b2 * q) * cos2c)

    return apply_elementwise(k, sin_pair(layer.a, layer.b, layer.c), diagonal)


@LAYERS.of(spec.Sign)
def sign(layer: spec.Sign, k: KernelState, parameterization: str) -> KernelState:
    """Sign: y = sign(x). K' = 1 − 2θ/π with θ the angle between u and v (θ = π/2 when either
    variance is 0, so K' = 0 there). Its derivative vanishes almost everywhere, so Θ' = 0.

    As neural-tangents does, the per-point covariances cov1/cov2 become 1 wherever they are
    nonzero and 0 where they are 0, for every entry (also between different positions, where
    the exact value would be the arcsine formula); only ``nngp`` uses the arcsine formula.

    Reference: neural-tangents ``stax.Sign``.
    """
    _, (q1, q2), _ = variance_pairs(k)
    angles = safe_arctan2(safe_sqrt(correlation_gap(k.nngp, q1, q2)), k.nngp, fill_zero=math.pi / 2)

    def indicator(cov: Tensor) -> Tensor:
        return torch.where(cov == 0.0, torch.zeros_like(cov), torch.ones_like(cov))

    return k.replace(
        nngp=1 - angles * 2 / math.pi,
        ntk=None if k.ntk is None else torch.zeros_like(k.ntk),
        cov1=indicator(k.cov1),
        cov2=None if k.cov2 is None else indicator(k.cov2),
        is_gaussian=False,
    )


# -- Gauss–Hermite quadrature ----------------------------------------------------------------


def _elu(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, torch.expm1(torch.clamp(x, max=0.0)))


def _softplus(x: Tensor) -> Tensor:
    return torch.logaddexp(x, torch.zeros_like(x))


def _tanh_both(x: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(x)
    return t, 1 - t * t


def _sigmoid_both(x: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(x)
    return s, s * (1 - s)


def _softplus_both(x: Tensor) -> tuple[Tensor, Tensor]:
    return _softplus(x), torch.sigmoid(x)


def _silu_both(x: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(x)
    return x * s, s * (1 + x * (1 - s))


def _elu_both(x: Tensor) -> tuple[Tensor, Tensor]:
    positive = x > 0
    e = torch.expm1(torch.clamp(x, max=0.0))
    return torch.where(positive, x, e), torch.where(positive, torch.ones_like(x), e + 1)


# fn name -> (φ, (φ, φ')); φ as in jax (jnp.tanh, jax.nn.sigmoid/softplus/silu, jax.nn.elu with
# α = 1), φ' the analytic derivative (neural-tangents takes it with jax.grad). The pair form shares
# the transcendental work between φ and φ' at the same argument.
NUMERICAL_FNS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], tuple[Tensor, Tensor]]]] = {
    "tanh": (torch.tanh, _tanh_both),
    "sigmoid": (torch.sigmoid, _sigmoid_both),
    "softplus": (_softplus, _softplus_both),
    "silu": (lambda x: x * torch.sigmoid(x), _silu_both),
    "elu": (_elu, _elu_both),
}

# Half-width L of the integration range in standard-normal units: the mass beyond ±L is
# 2·Φ(−9) = 2e-19, below the last bit of any kernel value even for φ growing like |x|.
QUADRATURE_HALF_WIDTH = 9.0



@lru_cache(maxsize=16)
def legendre_nodes(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [−1, 1] (``numpy.polynomial.legendre.leggauss``)."""
    return np.polynomial.legendre.leggauss(count)


def half_count(degree: int) -> int:
    """Nodes per side of a split: ``degree`` per axis in all, half on each side of the kink."""
    return max(1, -(-degree // 2))


@lru_cache(maxsize=16)
def standard_normal_rule(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z_k and weights w_k with Σ w_k f(z_k) ≈ E[f(Z)], Z ~ N(0, 1): Gauss–Legendre on
    [−L, 0] and on [0, L], ``half_count(degree)`` nodes each, the density folded into w_k.

    Why not Gauss–Hermite: tanh(√q z) has poles at z = ±iπ/(2√q), close to the real axis when q
    is large, and Gauss–Hermite converges like exp(−c·√(degree/q)) there (degree 64: 1e-4 off for
    E[tanh'(u)²] at q = 2.25, 9e-2 at q = 10). Legendre panels that meet at 0, where every
    activation here bends or has its kink (elu) and above which the poles sit, cluster their
    nodes there and converge geometrically: degree 64 gives 1e-10 at q = 2.25, 5e-7 at q = 10.
    """
    x, w = legendre_nodes(half_count(degree))
    half_width = QUADRATURE_HALF_WIDTH / 2
    z = half_width * (x + 1)  # (0, L)
    weights = half_width * w * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return np.concatenate([-z[::-1], z]), np.concatenate([weights[::-1], weights])


def correlated_expectation(f: Callable[[Tensor], Tensor], g: Callable[[Tensor], Tensor], degree: int,
                           c: Tensor, q1: Tensor, q2: Tensor) -> Tensor:
    """E[f(u) g(v)] for u, v perfectly correlated: u = √q1 Z, v = ±√q2 Z with the sign of c.

    A 1-D integral, exact for the diagonal (u = v) and for any pair with c² = q1 q2, which a 2-D
    rule would only approximate through a degenerate Cholesky factor. A zero variance is a
    constant end (u = 0 or v = 0), for which either sign is exact. The sum runs node by node, as
    elementwise operations: no reduction whose order depends on the tensor's shape.
    """
    z_np, w_np = standard_normal_rule(degree)
    r1 = torch.sqrt(q1)
    r2 = torch.where(c < 0, -torch.sqrt(q2), torch.sqrt(q2))
    out = None
    for z, w in zip(z_np.tolist(), w_np.tolist()):
        term = f(r1 * z).mul_(g(r2 * z)).mul_(w)
        out = term if out is None else out.add_(term)
    return out


def quadrature_pair(fn: Callable[[Tensor], Tensor], both: Callable[[Tensor], tuple[Tensor, Tensor]],
                    degree: int, need_dot: bool = True) -> PairFn:
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[q1, c], [c, q2]]), by the Cholesky factor
    of the covariance: with Z1, Z2 independent standard normals,

        u = √q1 Z1,   v = m + s Z2,   m = (c/√q1) Z1,   s = sqrt(q2 − c²/q1),
        E[φ(u)φ(v)] = E_Z1[ φ(√q1 Z1) · E_Z2[φ(m + s Z2)] ].

    The outer expectation is ``standard_normal_rule`` (split at u = 0); the inner one splits at
    Z2 = −m/s (v = 0), Gauss–Legendre on [−L, −m/s] and [−m/s, L], ``half_count(degree)`` nodes
    each, the density exp(−Z2²/2) evaluated at the nodes. Both splits sit on the kink of elu and
    under the poles of tanh, sigmoid, softplus and silu, so the rule converges geometrically in
    ``degree`` for all of them. The default, 96, reaches 1e-9 relative (tanh at q = 7 and
    ρ = 0.99999: 5e-12; degree 64: 2e-7), elu's slope near perfect correlation excepted (3e-8 at
    ρ = 0.999): see tests/engine/test_quadrature.py. Pairs within 8 ulps of perfect correlation
    (``correlation_gap``), the diagonal among them, take the exact 1-D rule
    ``correlated_expectation`` instead, where s = 0 would make the 2-D rule degenerate.

    The rule puts the first point on the outer axis, so it is symmetric in (u, v) only up to its
    error (kernel_fn symmetrizes K(x, x)). ``both(x) = (φ(x), φ'(x))`` is used when the φ' term is
    needed (``need_dot``), ``fn`` otherwise.

    Cost: degree² evaluations of φ (and φ') and degree² exponentials per entry. Memory: entries
    are processed in chunks so that one temporary (chunk × degree/2) holds at most
    QUADRATURE_CHUNK_ELEMENTS numbers.

    Reference: the rule replaces neural-tangents' ``ElementwiseNumerical(fn, deg)``, a degree ×
    degree Gauss–Hermite product rule, and differs from it by that rule's error (docs).
    """
    z_np, w_np = standard_normal_rule(degree)
    x_np, wx_np = legendre_nodes(half_count(degree))
    half_width = QUADRATURE_HALF_WIDTH
    phi_u = both if need_dot else (lambda x: (fn(x), None))

    def inner(center: Tensor, spread: Tensor, x: Tensor, wx: Tensor) -> tuple[Tensor, Tensor | None]:
        """E[φ(center + spread Z)] (and E[φ'(·)]) per entry, split at the kink center + spread·Z = 0."""
        split = torch.clamp(-center / spread, -half_width, half_width).unsqueeze(-1)
        total_f = total_d = None
        for low, high in ((-half_width, split), (split, half_width)):
            half = (high - low) / 2
            z = (high + low) / 2 + half * x  # (entries, nodes)
            weight = torch.exp(z * z * -0.5).mul_(wx).mul_(half)
            values, slopes = phi_u(center.unsqueeze(-1) + spread.unsqueeze(-1) * z)
            part_f = (values * weight).sum(-1)
            total_f = part_f if total_f is None else total_f + part_f
            if slopes is not None:
                part_d = (slopes * weight).sum(-1)
                total_d = part_d if total_d is None else total_d + part_d
        return total_f, total_d

    def two_dimensional(c: Tensor, q1: Tensor, q2: Tensor, gap: Tensor) -> tuple[Tensor, Tensor | None]:
        x = torch.as_tensor(x_np, dtype=c.dtype, device=c.device)
        wx = torch.as_tensor(wx_np, dtype=c.dtype, device=c.device) / math.sqrt(2 * math.pi)
        tiny = torch.finfo(c.dtype).tiny
        r1 = torch.sqrt(q1)
        slope = c / torch.clamp(r1, min=tiny)
        spread = torch.sqrt(torch.clamp(gap, min=0.0) / torch.clamp(q1, min=tiny)).clamp_(min=tiny)
        nngp = torch.zeros_like(c)
        dot = torch.zeros_like(c) if need_dot else None
        for z, w in zip(z_np.tolist(), w_np.tolist()):
            fu, du = phi_u(r1 * z)
            inner_f, inner_d = inner(slope * z, spread, x, wx)
            nngp += inner_f.mul_(fu).mul_(w)
            if need_dot:
                dot += inner_d.mul_(du).mul_(w)
        return nngp, dot

    def pair(c: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor | None]:
        shape = torch.broadcast_shapes(c.shape, q1.shape, q2.shape)
        c, q1, q2 = (t.reshape(-1) for t in torch.broadcast_tensors(c, q1, q2))
        gap = correlation_gap(c, q1, q2)
        chunk = max(1, QUADRATURE_CHUNK_ELEMENTS // half_count(degree))
        parts = [two_dimensional(c[i:i + chunk], q1[i:i + chunk], q2[i:i + chunk], gap[i:i + chunk])
                 for i in range(0, c.numel(), chunk)]
        nngp = torch.cat([p[0] for p in parts])
        dot = torch.cat([p[1] for p in parts]) if need_dot else None
        exact = perfectly_correlated(gap)
        if exact.any():
            nngp = torch.where(exact, correlated_expectation(fn, fn, degree, c, q1, q2), nngp)
            if need_dot:
                slope_fn = lambda x: both(x)[1]
                dot = torch.where(exact, correlated_expectation(slope_fn, slope_fn, degree, c, q1, q2), dot)
        return nngp.view(shape), None if dot is None else dot.view(shape)

    return pair


def quadrature_diagonal(fn: Callable[[Tensor], Tensor], degree: int) -> Callable[[Tensor], Tensor]:
    """E[φ(u)²] for u ~ N(0, q): the 1-D rule of ``correlated_expectation`` with c = q1 = q2 = q."""
    def diagonal(q: Tensor) -> Tensor:
        return correlated_expectation(fn, fn, degree, q, q, q)

    return diagonal


@LAYERS.of(spec.Elementwise)
def elementwise_numerical(layer: spec.Elementwise, k: KernelState, parameterization: str) -> KernelState:
    """Elementwise(fn, degree): φ by numerical quadrature (``quadrature_pair``), K' = E[φ(u)φ(v)],
    Θ' = Θ · E[φ'(u)φ'(v)], with φ' analytic. Per-point covariances use the 1-D rule when only
    same-position entries are kept, and the 2-D rule (no φ' term) otherwise.

    Reference: neural-tangents ``stax.ElementwiseNumerical(fn, deg)`` (φ' from jax.grad there),
    whose Gauss–Hermite product rule we replace by one that converges (``standard_normal_rule``).
    """
    fn, both = NUMERICAL_FNS[layer.fn]
    return apply_elementwise(
        k,
        quadrature_pair(fn, both, layer.degree, need_dot=k.ntk is not None),
        quadrature_diagonal(fn, layer.degree),
        self_pair_fn=quadrature_pair(fn, both, layer.degree, need_dot=False),
    )
