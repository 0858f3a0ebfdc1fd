"""Layers that act linearly on the pre-activations: their kernels are linear maps of the input's.

Reference: neural-tangents ``_src/stax/linear.py`` (Novak et al. 2020, "Neural Tangents: Fast and
Easy Infinite Neural Networks in Python"); the convolution and pooling kernels follow Novak et al.
2019, "Bayesian Deep Convolutional Networks with Many Channels are Gaussian Processes".
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from ntk.spec import architecture as spec
from .table import LAYERS
from ..state import KernelState, variance_pairs


@LAYERS.of(spec.Dense)
def dense(layer: spec.Dense, k: KernelState, parameterization: str) -> KernelState:
    """y = W x / sqrt(n) + b  (NTK parameterization), W, b ~ N(0, w_std²), N(0, b_std²).

    K' = w_std² K + b_std²;  Θ' = K' + w_std² Θ.
    Standard parameterization (y = W x + b, W ~ N(0, w_std²/n)) has the same K' but the gradient
    with respect to W scales with the fan-in n: Θ' = n K + w_std² Θ (+ 1 with a bias).
    """
    w2, b2 = layer.w_std**2, _square(layer.b_std)
    out = k.map_covariances(lambda c, batch_ndim, full_spatial: _affine(c, w2, b2))
    if k.ntk is not None:
        ntk = None if k.is_input else k.ntk
        out = out.replace(ntk=_ntk_affine(k, out, ntk, k.channels, w2, layer.b_std, parameterization))
    return out.replace(channels=layer.out_dim, is_gaussian=True, is_input=False)


@LAYERS.of(spec.Conv)
def conv(layer: spec.Conv, k: KernelState, parameterization: str) -> KernelState:
    """A convolution is a Dense layer applied to every patch, the filter's weights shared.

    Averaging the patch's covariances (the filter's taps are i.i.d.):
        K'[i, i'] = w_std² / |F| Σ_f K[s·i + f, s·i' + f] + b_std²,
    one sum per spatial axis, over the same tap f at both ends: only the diagonal of each
    position pair's filter window contributes. Θ' = K' + w_std² conv(Θ) as for Dense; standard
    parameterization scales the weight gradient by the fan-in n = channels · |F|.
    """
    strides = layer.strides or [1] * len(layer.filter_shape)
    window_sum = lambda c, batch_ndim, full_spatial: _shifted_sum(c, batch_ndim, full_spatial, layer.filter_shape,
                                                                  strides, layer.padding)
    # The mean over taps is the sum scaled by 1/|F|, folded into the affine's w_std²: one pass less.
    w2, b2 = layer.w_std**2 / _prod(layer.filter_shape), _square(layer.b_std)
    sums = k.map_covariances(window_sum)
    out = sums.map_covariances(lambda c, batch_ndim, full_spatial: _affine(c, w2, b2))
    if k.ntk is not None:
        ntk_sum = None if k.is_input else window_sum(k.ntk, 2, k.full_spatial)
        out = out.replace(ntk=_ntk_affine(sums, out, ntk_sum, k.channels, w2, layer.b_std, parameterization))
    return out.replace(
        channels=layer.out_chan,
        spatial_shape=spec.window_output(k.spatial_shape, layer.filter_shape, strides, layer.padding),
        is_gaussian=True,
        is_input=False,
    )


@LAYERS.of(spec.AvgPool)
def avg_pool(layer: spec.AvgPool, k: KernelState, parameterization: str) -> KernelState:
    """Average over windows: K'[I, I'] = 1/|w|² Σ_{a, a'} K[s·I + a, s·I' + a'], per spatial axis.

    Unlike a convolution every pair of window positions contributes, so this needs the full
    position-by-position covariance. SAME padding pads with zeros and still divides by the whole
    window (neural-tangents' ``normalize_edges=False``). Strides default to 1, as in
    neural-tangents (not to the window, as in torch).
    """
    strides = layer.strides or [1] * len(layer.window_shape)
    spatial_shape = spec.window_output(k.spatial_shape, layer.window_shape, strides, layer.padding)

    def pool(c: Tensor, batch_ndim: int, full_spatial: bool) -> Tensor:
        if not full_spatial:
            return _untracked(c, batch_ndim, spatial_shape)
        return _window_mean(c, batch_ndim, layer.window_shape, strides, layer.padding)

    return k.map_covariances(pool).replace(
        ntk=None if k.ntk is None else pool(k.ntk, 2, True), spatial_shape=spatial_shape)


@LAYERS.of(spec.GlobalAvgPool)
def global_avg_pool(layer: spec.GlobalAvgPool, k: KernelState, parameterization: str) -> KernelState:
    """The mean over all positions: K' = mean_{i, i'} K[i, i'] (every pair of positions)."""
    def mean(c: Tensor, batch_ndim: int, full_spatial: bool) -> Tensor:
        if not full_spatial:
            return _untracked(c, batch_ndim, ())
        return c.mean(dim=tuple(range(batch_ndim, c.ndim)))

    return k.map_covariances(mean).replace(
        ntk=None if k.ntk is None else mean(k.ntk, 2, True), spatial_shape=(), full_spatial=False,
        cov_full_spatial=False)


@LAYERS.of(spec.Flatten)
def flatten(layer: spec.Flatten, k: KernelState, parameterization: str) -> KernelState:
    """Positions become channels: K' = mean_i K[i, i] (equal positions only).

    The output's channels are (position, channel) pairs; i.i.d. weights of the next layer see
    different positions as different channels, whose covariance does not enter.
    """
    def diagonal_mean(c: Tensor, batch_ndim: int, full_spatial: bool) -> Tensor:
        if full_spatial:
            for _ in range(k.spatial_ndim):
                c = torch.diagonal(c, dim1=batch_ndim, dim2=batch_ndim + 1)
        return c.mean(dim=tuple(range(batch_ndim, c.ndim))) if c.ndim > batch_ndim else c

    return k.map_covariances(diagonal_mean).replace(
        ntk=None if k.ntk is None else diagonal_mean(k.ntk, 2, k.full_spatial),
        channels=k.channels * _prod(k.spatial_shape),
        spatial_shape=(),
        full_spatial=False,
        cov_full_spatial=False,
    )


@LAYERS.of(spec.LayerNorm)
def layer_norm(layer: spec.LayerNorm, k: KernelState, parameterization: str) -> KernelState:
    """Normalize each point by its standard deviation over ``axis`` (channels always included).

    With infinitely many channels the empirical variance over channels is the kernel's diagonal,
    so K'[x, x'] = K[x, x'] / sqrt((ε + v(x)) (ε + v(x'))), v the variance averaged over the
    normalized spatial positions. Θ scales the same way. ε = 1e-12 as in neural-tangents.
    """
    ndim = k.spatial_ndim + 2  # batch, spatial..., channel
    spatial_axes = tuple(sorted({a % ndim - 1 for a in layer.axis} - {ndim - 2}))
    (v11a, v11b), (v12a, v12b), pair22 = variance_pairs(k, mean_over=spatial_axes, shift=spec.LAYER_NORM_EPS)
    scale12 = torch.rsqrt(v12a * v12b)
    return k.replace(
        nngp=k.nngp * scale12,
        ntk=None if k.ntk is None else k.ntk * scale12,
        cov1=k.cov1 * torch.rsqrt(v11a * v11b),
        cov2=None if pair22 is None else k.cov2 * torch.rsqrt(pair22[0] * pair22[1]),
    )


@LAYERS.of(spec.Identity)
def identity(layer: spec.Identity, k: KernelState, parameterization: str) -> KernelState:
    """y = x."""
    return k


def _untracked(c: Tensor, batch_ndim: int, spatial_shape: tuple[int, ...]) -> Tensor:
    """A pooled per-point covariance where only the variances at each position were tracked.

    Pooling needs every pair of positions; ``Architecture.covariances_need_full_spatial`` keeps
    them whenever a later layer reads the pooled variances, so this one is never read. NaN makes
    a violation of that promise surface as a non-finite kernel, not as a wrong number.
    """
    return c.new_full((*c.shape[:batch_ndim], *spatial_shape), float("nan"))


def _affine(c: Tensor, w2: float, b2: float) -> Tensor:
    out = torch.mul(c, w2)
    return out.add_(b2) if b2 else out


def _ntk_affine(before: KernelState, after: KernelState, ntk: Tensor | None, fan_in: int, w2: float,
                b_std: float | None, parameterization: str) -> Tensor:
    """Θ' = K' + w_std² Θ (NTK parameterization) or n K + w_std² Θ [+ 1 with a bias] (standard),
    K the kernel before the layer's scaling and K' after it. ``ntk`` None stands for Θ = 0 (the
    inputs have no parameters), which saves the first layer a pass over a tensor of zeros."""
    if parameterization == "ntk":
        return after.nngp.clone() if ntk is None else torch.add(after.nngp, ntk, alpha=w2)
    out = torch.mul(before.nngp, fan_in)
    if ntk is not None:
        out.add_(ntk, alpha=w2)
    return out.add_(1.0) if b_std is not None else out


# -- spatial bookkeeping ---------------------------------------------------------------------


def _square(std: float | None) -> float:
    return 0.0 if std is None else std**2


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _tap_sum(c: Tensor, dims: tuple[int, ...], window: int, stride: int, padding: str) -> Tensor:
    """Σ_f c[s·i + f − lo] over window taps f, the same tap on every axis in ``dims``.

    Positions outside the input contribute zero (SAME padding); CIRCULAR wraps the input first.
    Each tap is one strided slice added into the output: no padded copy of a P×P covariance.
    """
    if stride == 1 and padding == "SAME" and len(dims) == 2 and _contiguous_from(c, dims[0]):
        return _flat_tap_sum(c, dims, window)
    if padding == "CIRCULAR":
        n = c.shape[dims[0]]
        lo, hi = spec.same_pads(n, window, stride)
        index = torch.arange(-lo, n + hi, device=c.device) % n
        for d in dims:
            c = c.index_select(d, index)
        padding = "VALID"
    n = c.shape[dims[0]]
    lo = spec.same_pads(n, window, stride)[0] if padding == "SAME" else 0
    size = spec.window_output((n,), (window,), (stride,), padding)[0]
    # Output positions i whose input position s·i + f − lo lies inside [0, n), per tap f; a tap
    # that covers every output goes first, so the output starts as its copy instead of zeros.
    ranges = [(f, max(0, -((f - lo) // stride)), min(size, (n - 1 - f + lo) // stride + 1))
              for f in range(window)]
    ranges.sort(key=lambda r: (r[1], r[2]) != (0, size))
    out = None
    for f, first, last in ranges:
        if first >= last:
            continue
        start = stride * first + f - lo
        source, target = [slice(None)] * c.ndim, [slice(None)] * c.ndim
        for d in dims:
            source[d] = slice(start, start + stride * (last - first - 1) + 1, stride)
            target[d] = slice(first, last)
        if out is None and (first, last) == (0, size):
            out = c[tuple(source)].clone()
            continue
        if out is None:
            shape = list(c.shape)
            for d in dims:
                shape[d] = size
            out = c.new_zeros(shape)
        out[tuple(target)] += c[tuple(source)]
    return out


def _flat_tap_sum(c: Tensor, dims: tuple[int, int], window: int) -> Tensor:
    """``_tap_sum`` for stride 1 and SAME padding on a position pair (i, i') of a contiguous tensor.

    Moving both ends of the pair by the same tap f moves the entry by f·(stride_i + stride_i') in
    memory, so with everything from axis i on flattened each tap is one contiguous shifted add,
    where slices along the innermost position pair would be runs of a few numbers (1.5× faster on
    8×8 images). Entries whose partner lies outside the input read a neighbouring row instead:
    ``_tap_masks`` zeroes them.
    """
    flat = c.flatten(dims[0])
    length = flat.shape[-1]
    step = c.stride(dims[0]) + c.stride(dims[1])
    out = flat.clone()
    for shift, mask in _tap_masks(tuple(c.shape[dims[0]:]), window, c.dtype, c.device):
        offset = shift * step
        if offset > 0:
            out[..., :length - offset].addcmul_(flat[..., offset:], mask[:length - offset])
        else:
            out[..., -offset:].addcmul_(flat[..., :length + offset], mask[-offset:])
    return out.view(c.shape)


def _contiguous_from(c: Tensor, dim: int) -> bool:
    """Whether axes ``dim`` onwards are laid out contiguously (so they flatten to a view)."""
    expected = 1
    for size, stride in reversed(list(zip(c.shape[dim:], c.stride()[dim:]))):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


@lru_cache(maxsize=64)
def _tap_masks(shape: tuple[int, ...], window: int, dtype: torch.dtype, device: torch.device
               ) -> list[tuple[int, Tensor]]:
    """For each nonzero SAME tap shift f: 1 where (i + f, i' + f) lies inside, 0 elsewhere, over
    the flattened ``shape`` (i, i', *rest)."""
    lo = spec.same_pads(shape[0], window, 1)[0]
    i = torch.arange(shape[0], device=device).view(-1, 1)
    masks = []
    for shift in (f - lo for f in range(window) if f != lo):
        inside = ((i + shift >= 0) & (i + shift < shape[0]))
        pair = inside & inside.T
        masks.append((shift, pair.to(dtype).view(*shape[:2], *[1] * (len(shape) - 2))
                       .expand(shape).reshape(-1)))
    return masks


def _shifted_sum(c: Tensor, batch_ndim: int, full_spatial: bool, window, strides, padding) -> Tensor:
    """The convolution's kernel map before its 1/|F|: Σ over filter taps f of c[s·i + f, s·i' + f]."""
    for axis, (w, s) in enumerate(zip(window, strides)):
        dims = (batch_ndim + 2 * axis, batch_ndim + 2 * axis + 1) if full_spatial else (batch_ndim + axis,)
        c = _tap_sum(c, dims, w, s, padding)
    return c


def _window_mean(c: Tensor, batch_ndim: int, window, strides, padding) -> Tensor:
    """The pooling's kernel map: mean over independent window offsets at both ends of a pair."""
    for axis, (w, s) in enumerate(zip(window, strides)):
        for d in (batch_ndim + 2 * axis, batch_ndim + 2 * axis + 1):
            c = _tap_sum(c, (d,), w, s, padding)
    return c.mul_(1.0 / _prod(window) ** 2)
