"""The kernel state that flows through a layer stack.

Every layer of an infinitely wide network maps the second moments of its input to those of its
output. For inputs ``x1`` (N1 points) and ``x2`` (N2 points) we track, as neural-tangents does:

* ``nngp``  the cross covariance K(x1, x2) of pre-activations, shape (N1, N2, *S);
* ``ntk``   the neural tangent kernel Θ(x1, x2), same shape (None when not requested);
* ``cov1``  the covariance of each x1 point with itself, shape (N1, *S);
* ``cov2``  the same for x2, or None when x2 is x1 (the symmetric case computes it once).

``S`` are the spatial axes. With ``full_spatial`` each spatial axis appears twice, interleaved
(H, H', W, W'), holding the covariance between every pair of positions: pooling needs it. Without
it only same-position covariances (H, W) are kept; convolutions, elementwise layers and Flatten
are exact on those alone, which is what makes pooling-free CNNs cheap. ``cov_full_spatial`` says
the same of cov1/cov2, which may keep only the variance at each position while nngp keeps every
pair (see ``Architecture.covariances_need_full_spatial``).

The channel axis never appears: weights are i.i.d. across channels, so covariances between
different channels vanish and those of equal channels coincide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor


@dataclass(frozen=True)
class KernelState:
    nngp: Tensor
    ntk: Tensor | None
    cov1: Tensor
    cov2: Tensor | None
    spatial_shape: tuple[int, ...]
    full_spatial: bool
    cov_full_spatial: bool
    channels: int
    is_gaussian: bool = False
    is_input: bool = False

    def replace(self, **changes) -> KernelState:
        return dataclasses.replace(self, **changes)

    @property
    def spatial_ndim(self) -> int:
        return len(self.spatial_shape)

    def map_covariances(self, fn) -> KernelState:
        """Apply one linear map ``fn(c, batch_ndim, full_spatial)`` to cov1, nngp and cov2."""
        return self.replace(
            cov1=fn(self.cov1, 1, self.cov_full_spatial),
            nngp=fn(self.nngp, 2, self.full_spatial),
            cov2=None if self.cov2 is None else fn(self.cov2, 1, self.cov_full_spatial),
        )


def input_kernel(x1: Tensor, x2: Tensor | None, full_spatial: bool, compute_ntk: bool,
                 cov_full_spatial: bool | None = None) -> KernelState:
    """The kernel of the inputs themselves: K(x, x') = <x, x'> / channels.

    Inputs are channels-last, (N, *spatial, C). The NTK of the input layer is zero: inputs have no
    parameters. Reference: neural-tangents ``_inputs_to_kernel``.
    """
    channels = x1.shape[-1]
    spatial_shape = tuple(x1.shape[1:-1])

    def cross(a: Tensor, b: Tensor) -> Tensor:
        if not spatial_shape:
            return a @ b.T
        if full_spatial:
            k = torch.einsum("npc,mqc->nmpq", a.flatten(1, -2), b.flatten(1, -2))
            # (N1, N2, P, P') -> (N1, N2, H, W, H', W') -> interleave to (N1, N2, H, H', W, W')
            k = k.reshape(a.shape[0], b.shape[0], *spatial_shape, *spatial_shape)
            return interleave(k, 2, len(spatial_shape)).contiguous()
        return torch.einsum("n...c,m...c->nm...", a, b)

    cov_full_spatial = full_spatial if cov_full_spatial is None else cov_full_spatial

    def self_cov(a: Tensor) -> Tensor:
        if cov_full_spatial and spatial_shape:
            flat = a.flatten(1, -2)
            k = torch.einsum("npc,nqc->npq", flat, flat)
            k = k.reshape(a.shape[0], *spatial_shape, *spatial_shape)
            return interleave(k, 1, len(spatial_shape))
        return (a * a).sum(-1)

    nngp = cross(x1, x1 if x2 is None else x2) / channels
    if x2 is None and not spatial_shape:
        # A matmul need not give (i, j) and (j, i) the same last bit; (K + Kᵀ)/2 (exact halving)
        # does, and the layers in layers.KEEPS_SYMMETRY keep it so (a sweep then copies its
        # outputs instead of symmetrizing each one).
        nngp = torch.add(nngp, nngp.T).mul_(0.5)
    cov1 = self_cov(x1) / channels
    cov2 = None if x2 is None else self_cov(x2) / channels
    nngp, cov1 = snap_identical(nngp, cov1, x1, x2, full_spatial, cov_full_spatial)
    if x2 is None:
        # A point's covariance with itself must be its variance to the last bit: nonlinearities
        # evaluate sqrt(q1 q2 - c²) there, which turns a rounding difference of 1e-16 between
        # two ways of summing into 1e-8. Taking both from one computation keeps tiles exact.
        same_point = torch.diagonal(nngp, dim1=0, dim2=1).movedim(-1, 0)
        if full_spatial and not cov_full_spatial:
            same_point = position_variances(same_point, True, len(spatial_shape))
        same_point.copy_(cov1)
    return KernelState(
        nngp=nngp,
        ntk=torch.zeros_like(nngp) if compute_ntk else None,
        cov1=cov1,
        cov2=cov2,
        spatial_shape=spatial_shape,
        full_spatial=full_spatial,
        cov_full_spatial=cov_full_spatial,
        channels=channels,
        is_gaussian=False,
        is_input=True,
    )


def snap_identical(nngp: Tensor, cov1: Tensor, x1: Tensor, x2: Tensor | None, full_spatial: bool,
                   cov_full_spatial: bool) -> tuple[Tensor, Tensor]:
    """Give every pair of identical points (or pixels) the variance of the first as covariance.

    The matmul that gives K(x1, x2) sums in another order than the row sums of squares that give
    the variances, so for two identical points c and q differ in the last few bits (20 ulps at
    d = 3072), and the nonlinearities' sqrt(q1 q2 − c²) turns that into an angle of 1e-8 that
    compounds with depth. Identical points are found exactly, by ``fingerprints`` of their bits.
    """
    spatial_ndim = x1.ndim - 2
    print1 = fingerprints(x1)
    print2 = print1 if x2 is None else fingerprints(x2)
    var1 = position_variances(cov1, cov_full_spatial, spatial_ndim)

    def snap(cov: Tensor, prints_b: Tensor, batch_ndim: int, full: bool) -> Tensor:
        first, second = pair_ends(print1, prints_b, batch_ndim, full, spatial_ndim)
        variance, _ = pair_ends(var1, var1, batch_ndim, full, spatial_ndim)
        return torch.where(first == second, variance, cov)

    nngp = snap(nngp, print2, 2, full_spatial)
    if cov_full_spatial and spatial_ndim:
        cov1 = snap(cov1, print1, 1, True)
    return nngp, cov1


FINGERPRINT_PRIME = 2_147_483_647  # 2³¹ − 1: products of two residues stay below 2⁶²


def fingerprints(x: Tensor) -> Tensor:
    """A 62-bit hash of each point's (or, with spatial axes, each pixel's) channel vector, (N, *S).

    Two polynomial hashes modulo 2³¹ − 1 of the values' bit patterns, with fixed pseudo-random
    weights: equal vectors give equal prints; two unequal ones collide about once in 2⁶².
    Integer arithmetic, so the print does not depend on summation order as a float sum would.
    """
    integer = {8: torch.int64, 4: torch.int32, 2: torch.int16}[x.element_size()]
    bits = torch.remainder(x.contiguous().view(integer).to(torch.int64), FINGERPRINT_PRIME)
    first, second = _fingerprint_weights(x.shape[-1], x.device)
    h1 = torch.remainder(bits * first, FINGERPRINT_PRIME).sum(-1).remainder_(FINGERPRINT_PRIME)
    h2 = torch.remainder(bits * second, FINGERPRINT_PRIME).sum(-1).remainder_(FINGERPRINT_PRIME)
    return h1.mul_(FINGERPRINT_PRIME).add_(h2)


@lru_cache(maxsize=8)
def _fingerprint_weights(channels: int, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0x5EED)
    weights = torch.randint(1, FINGERPRINT_PRIME, (2, channels), generator=generator, dtype=torch.int64)
    return weights[0].to(device), weights[1].to(device)


def interleave(k: Tensor, batch_ndim: int, spatial_ndim: int) -> Tensor:
    """(B..., H, W, H', W') -> (B..., H, H', W, W'): pair each position axis with its partner."""
    order = list(range(batch_ndim))
    for i in range(spatial_ndim):
        order += [batch_ndim + i, batch_ndim + spatial_ndim + i]
    return k.permute(order)


def position_variances(cov: Tensor, full_spatial: bool, spatial_ndim: int) -> Tensor:
    """The variance at each position, (N, *spatial), from a per-point covariance (N, *S)."""
    if not full_spatial:
        return cov
    for _ in range(spatial_ndim):
        # Take the diagonal of the leading (H, H') pair and move it to the back, so after S
        # steps the axes are (N, H, W, ...) in order.
        cov = torch.diagonal(cov, dim1=1, dim2=2)
    return cov


Pair = tuple[Tensor, Tensor]


def variance_pairs(state: KernelState, mean_over: tuple[int, ...] = (), shift: float = 0.0
                   ) -> tuple[Pair, Pair, Pair | None]:
    """Variances at both ends of every entry of cov1, nngp and cov2, broadcastable to them.

    An elementwise nonlinearity maps a covariance c between two jointly Gaussian pre-activations
    u, v to E[φ(u)φ(v)], which depends on c and the two variances Var u, Var v. For nngp[n1, n2,
    i, i'] these are var1[n1, i] and var2[n2, i']. ``shift`` is added to every variance and
    ``mean_over`` (spatial axes, 0-based) averages them over positions first, as LayerNorm needs.
    """
    s = state.spatial_ndim

    def variances(cov: Tensor) -> Tensor:
        var = position_variances(cov, state.cov_full_spatial, s) + shift
        if mean_over:
            var = var.mean(dim=tuple(1 + a for a in mean_over), keepdim=True)
        return var

    var1 = variances(state.cov1)
    var2 = var1 if state.cov2 is None else variances(state.cov2)

    pair11 = pair_ends(var1, var1, 1, state.cov_full_spatial, s)
    pair12 = pair_ends(var1, var2, 2, state.full_spatial, s)
    pair22 = None if state.cov2 is None else pair_ends(var2, var2, 1, state.cov_full_spatial, s)
    return pair11, pair12, pair22


def pair_ends(va: Tensor, vb: Tensor, batch_ndim: int, full_spatial: bool, spatial_ndim: int
              ) -> tuple[Tensor, Tensor]:
    """Per-position values (N, *spatial) of the two ends of every entry of a covariance, broadcastable
    to it: va indexes the first point (and first position of each pair), vb the second."""
    if batch_ndim == 2:
        va, vb = va.unsqueeze(1), vb.unsqueeze(0)
    if full_spatial:
        for axis in range(spatial_ndim):
            va = va.unsqueeze(batch_ndim + 2 * axis + 1)
            vb = vb.unsqueeze(batch_ndim + 2 * axis)
    return va, vb
