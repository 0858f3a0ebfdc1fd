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
from typing import Callable

import torch
from torch import Tensor

from .. import spec
from ..state import KernelState, variance_pairs

PairFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def apply_elementwise(k: KernelState, pair_fn: PairFn, diagonal_fn: Callable[[Tensor], Tensor] | None = None,
                      self_pair_fn: PairFn | None = None) -> KernelState:
    """Map cov1, nngp, cov2 through ``pair_fn`` and scale Θ by its derivative term.

    ``diagonal_fn(q) = E[φ(u)²]`` is the cheaper exact map for entries that pair a position with
    itself; neural-tangents uses it for cov1/cov2 when only same-position variances are kept, and
    so do we, to agree with it to the last digit. ``self_pair_fn`` (default ``pair_fn``) maps
    cov1/cov2 otherwise; it may skip the derivative term, which they never need.
    """
    self_pair_fn = self_pair_fn or pair_fn
    (q11a, q11b), (q12a, q12b), pair22 = variance_pairs(k)
    nngp, dot = pair_fn(k.nngp, q12a, q12b)

    def self_cov(cov: Tensor, qa: Tensor, qb: Tensor) -> Tensor:
        if diagonal_fn is not None and not k.cov_full_spatial:
            return diagonal_fn(cov)
        return self_pair_fn(cov, qa, qb)[0]

    return k.replace(
        nngp=nngp,
        ntk=None if k.ntk is None else k.ntk * dot,
        cov1=self_cov(k.cov1, q11a, q11b),
        cov2=None if pair22 is None else self_cov(k.cov2, *pair22),
        is_gaussian=False,
    )


# -- rectifiers ------------------------------------------------------------------------------


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


def ab_relu_pair(a: float, b: float) -> PairFn:
    """φ(x) = a·min(x, 0) + b·max(x, 0), with θ the angle between u and v (Cho & Saul 2009):

    K' = (a − b)²/(2π) · sqrt(q1 q2 − c²) + ((a² + b²)/2 − (a − b)²/(2π) · θ) · c,
    dot = (a² + b²)/2 − (a − b)²/(2π) · θ.
    """
    factor = (a - b) ** 2 / (2 * math.pi)
    mean_slope2 = (a**2 + b**2) / 2

    def pair(c: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        # In place on fresh temporaries: this runs on every entry of every tile, and memory
        # traffic, not arithmetic, is its cost. q1 q2 and c² are rounded separately (no fused
        # multiply-add) so that c = q1 = q2 gives q1 q2 − c² = 0 exactly.
        gap = torch.mul(q1, q2).sub_(c * c).clamp_(min=torch.finfo(c.dtype).tiny)
        # √gap as gap·rsqrt(gap), 3× faster than sqrt in float64 on CPUs (≤ 2 ulp). Clamping at
        # the smallest normal number instead of 0 keeps it finite: a zero root becomes ~1e-154,
        # below the last bit of any kernel value, and two zero-variance points (c = 0) get
        # θ = π/2, the angle neural-tangents fills in for them.
        root = torch.rsqrt(gap).mul_(gap)
        dot = torch.rsub(torch.atan2(root, c), mean_slope2, alpha=factor)
        return root.mul_(factor).addcmul_(dot, c), dot

    return pair


def ab_relu(layer: spec.ABRelu, k: KernelState, parameterization: str) -> KernelState:
    """ABRelu(a, b) = a·min(x, 0) + b·max(x, 0); on the diagonal K' = (a² + b²)/2 · q."""
    return _rectifier(layer.a, layer.b, k)


def relu(layer: spec.Relu, k: KernelState, parameterization: str) -> KernelState:
    """Relu = ABRelu(0, 1): the arc-cosine kernel of degree 1."""
    return _rectifier(0.0, 1.0, k)


def leaky_relu(layer: spec.LeakyRelu, k: KernelState, parameterization: str) -> KernelState:
    """LeakyRelu(α) = ABRelu(α, 1)."""
    return _rectifier(layer.alpha, 1.0, k)


def abs_(layer: spec.Abs, k: KernelState, parameterization: str) -> KernelState:
    """Abs = ABRelu(−1, 1)."""
    return _rectifier(-1.0, 1.0, k)


def _rectifier(a: float, b: float, k: KernelState) -> KernelState:
    mean_slope2 = (a**2 + b**2) / 2
    return apply_elementwise(k, ab_relu_pair(a, b), lambda q: mean_slope2 * q)


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


def sin(layer: spec.Sin, k: KernelState, parameterization: str) -> KernelState:
    """Sin(a, b, c): y = a·sin(b x + c); on the diagonal K' = a²/2 · (1 − exp(−2 b² q) cos 2c).

    Reference: neural-tangents ``stax.Sin``.
    """
    half_a2, b2, cos2c = layer.a**2 / 2.0, layer.b**2, math.cos(2 * layer.c)

    def diagonal(q: Tensor) -> Tensor:
        return half_a2 * (1.0 - torch.exp(-2 * b2 * q) * cos2c)

    return apply_elementwise(k, sin_pair(layer.a, layer.b, layer.c), diagonal)


def sign(layer: spec.Sign, k: KernelState, parameterization: str) -> KernelState:
    """Sign: y = sign(x). K' = 1 − 2θ/π with θ the angle between u and v (θ = π/2 when either
    variance is 0, so K' = 0 there). Its derivative vanishes almost everywhere, so Θ' = 0.

    As neural-tangents does, the per-point covariances cov1/cov2 become 1 wherever they are
    nonzero and 0 where they are 0, for every entry (also between different positions, where
    the exact value would be the arcsine formula); only ``nngp`` uses the arcsine formula.

    Reference: neural-tangents ``stax.Sign``.
    """
    _, (q1, q2), _ = variance_pairs(k)
    angles = safe_arctan2(safe_sqrt(q1 * q2 - k.nngp**2), k.nngp, fill_zero=math.pi / 2)

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

_HERMITE_CACHE: dict[int, tuple] = {}

# Upper bound on the elements of one quadrature temporary (tile entries × inner nodes).
QUADRATURE_CHUNK_ELEMENTS = 1 << 24


def hermite_nodes(degree: int):
    """Gauss–Hermite nodes and weights for ∫ e^{−x²} f(x) dx, as neural-tangents takes them
    (``scipy.special.roots_hermite``; numpy's ``hermgauss`` agrees to ~1e-13). Cached per degree."""
    if degree not in _HERMITE_CACHE:
        import scipy.special

        _HERMITE_CACHE[degree] = scipy.special.roots_hermite(degree)
    return _HERMITE_CACHE[degree]


def quadrature_pair(fn: Callable[[Tensor], Tensor], both: Callable[[Tensor], tuple[Tensor, Tensor]],
                    degree: int, need_dot: bool = True):
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] by a degree × degree Gauss–Hermite rule (neural-tangents'
    ``ElementwiseNumerical``). Writing u = sqrt(2 q1) x and v = c/sqrt(q1/2) x + sqrt(2(q2 − c²/q1)) y,

    E[f(u) f(v)] ≈ (1/π) Σ_i Σ_j w_i w_j f(sqrt(2 q1) x_i) f(c/sqrt(q1/2) x_i + sqrt(2(q2 − c²/q1)) x_j),

    with neural-tangents' guards: sqrt(q1/2) is clamped below at 1e-30 and the conditional variance
    at 0 (c²/q1 is 0/0 = NaN for a zero-variance first point, as in neural-tangents). The rule is
    not symmetric in (u, v): the first point sits on the outer axis.

    ``both(x) = (φ(x), φ'(x))`` is used when the φ' term is needed (``need_dot``), ``fn`` otherwise.

    Cost: degree² evaluations of φ (and φ') per kernel entry. Memory: the outer node axis is a
    Python loop and the inner one is vectorized in chunks of at most QUADRATURE_CHUNK_ELEMENTS
    elements, so the peak is O(entries × min(degree, chunk)) instead of O(entries × degree²).
    """
    xs_np, ws_np = hermite_nodes(degree)

    def pair(cov: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor | None]:
        xs = torch.as_tensor(xs_np, dtype=cov.dtype, device=cov.device)
        ws = torch.as_tensor(ws_np, dtype=cov.dtype, device=cov.device)
        cov, q1, q2 = torch.broadcast_tensors(cov, q1, q2)
        first_scale = torch.sqrt(torch.clamp(2 * q1, min=0.0))
        slope = cov / torch.sqrt(torch.clamp(q1 / 2, min=1e-30))
        spread = torch.sqrt(torch.clamp(2 * (q2 - cov**2 / q1), min=0.0))
        chunk = max(1, min(degree, QUADRATURE_CHUNK_ELEMENTS // max(1, cov.numel())))
        nngp = torch.zeros_like(cov)
        dot = torch.zeros_like(cov) if need_dot else None
        spread_ = spread.unsqueeze(-1)
        for i in range(degree):
            u = first_scale * xs[i]
            center = (slope * xs[i]).unsqueeze(-1)
            inner_f = torch.zeros_like(cov)
            inner_d = torch.zeros_like(cov) if need_dot else None
            for j0 in range(0, degree, chunk):
                v = center + spread_ * xs[j0:j0 + chunk]
                w = ws[j0:j0 + chunk]
                if need_dot:
                    fv, dv = both(v)
                    inner_f += fv @ w
                    inner_d += dv @ w
                else:
                    inner_f += fn(v) @ w
            if need_dot:
                fu, du = both(u)
                nngp += (ws[i] * fu) * inner_f
                dot += (ws[i] * du) * inner_d
            else:
                nngp += (ws[i] * fn(u)) * inner_f
        nngp = nngp / math.pi
        return nngp, None if dot is None else dot / math.pi

    return pair


def quadrature_diagonal(fn: Callable[[Tensor], Tensor], degree: int) -> Callable[[Tensor], Tensor]:
    """E[φ(u)²] = (1/sqrt(π)) Σ_i w_i φ(sqrt(2q) x_i)², neural-tangents' 1-D rule on the diagonal."""
    xs_np, ws_np = hermite_nodes(degree)

    def diagonal(q: Tensor) -> Tensor:
        xs = torch.as_tensor(xs_np, dtype=q.dtype, device=q.device)
        ws = torch.as_tensor(ws_np, dtype=q.dtype, device=q.device)
        root = torch.sqrt(torch.clamp(2 * q, min=0.0))
        out = torch.zeros_like(q)
        for i in range(degree):
            out += ws[i] * fn(root * xs[i]) ** 2
        return out / math.sqrt(math.pi)

    return diagonal


def elementwise_numerical(layer: spec.Elementwise, k: KernelState, parameterization: str) -> KernelState:
    """Elementwise(fn, degree): any smooth φ by Gauss–Hermite quadrature (``quadrature_pair``),
    K' = E[φ(u)φ(v)], Θ' = Θ · E[φ'(u)φ'(v)], with φ' analytic. Per-point covariances use the 1-D
    rule when only same-position entries are kept, and the 2-D rule (no φ' term) otherwise.

    Reference: neural-tangents ``stax.ElementwiseNumerical(fn, deg)`` (φ' from jax.grad there).
    """
    fn, both = NUMERICAL_FNS[layer.fn]
    return apply_elementwise(
        k,
        quadrature_pair(fn, both, layer.degree, need_dot=k.ntk is not None),
        quadrature_diagonal(fn, layer.degree),
        self_pair_fn=quadrature_pair(fn, both, layer.degree, need_dot=False),
    )
