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


def apply_elementwise(k: KernelState, pair_fn: PairFn, diagonal_fn: Callable[[Tensor], Tensor] | None = None
                      ) -> KernelState:
    """Map cov1, nngp, cov2 through ``pair_fn`` and scale Θ by its derivative term.

    ``diagonal_fn(q) = E[φ(u)²]`` is the cheaper exact map for entries that pair a position with
    itself; neural-tangents uses it for cov1/cov2 when only same-position variances are kept, and
    so do we, to agree with it to the last digit.
    """
    (q11a, q11b), (q12a, q12b), pair22 = variance_pairs(k)
    nngp, dot = pair_fn(k.nngp, q12a, q12b)

    def self_cov(cov: Tensor, qa: Tensor, qb: Tensor) -> Tensor:
        if diagonal_fn is not None and not k.full_spatial:
            return diagonal_fn(cov)
        return pair_fn(cov, qa, qb)[0]

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
        root = safe_sqrt(q1 * q2 - c * c)
        theta = safe_arctan2(root, c, fill_zero=math.pi / 2)
        dot = mean_slope2 - factor * theta
        return factor * root + dot * c, dot

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
