"""Monte Carlo estimates of the NNGP and NTK from finite, randomly initialized networks.

For one network f(·; θ) with k outputs, the empirical kernels (neural-tangents ``empirical_nngp_fn``
and ``empirical_ntk_fn`` with their default ``trace_axes=(-1,)``: the output axis traced out and
divided by its size) are

    K̂(x, x') = 1/k Σ_j f_j(x) f_j(x'),
    Θ̂(x, x') = 1/k Σ_j Σ_p ∂f_j(x)/∂θ_p · ∂f_j(x')/∂θ_p.

``monte_carlo_kernel_fn`` averages them over ``samples`` independently initialized networks, as
``neural_tangents.monte_carlo_kernel_fn`` does. At initialization and in the limit of infinite
width, K̂ → K (the NNGP, Neal 1994; Lee et al. 2018; Matthews et al. 2018) and Θ̂ → Θ (the NTK,
Jacot et al. 2018; Lee et al. 2019, "Wide Neural Networks of Any Depth Evolve as Linear Models
Under Gradient Descent"); at finite width the mean over samples carries an O(1/width) bias and the
sampling error shrinks as 1/√samples (Novak et al. 2020, "Neural Tangents", §Monte Carlo). The
standard errors returned with the means, sd(samples) / √samples, measure only the latter.

How Θ̂ is computed. Every parameter is the weight or the bias of a Dense or Conv layer,
y = w_scale · W ⋆ x + b_scale · b, so with δ = ∂f_j/∂y (the signal backpropagated to that layer's
output; one backward pass per output j, vmapped) the layer's share of Θ̂ is

    Θ̂_W(x, x') = w_scale² Σ_j Σ_{o,c,t} (Σ_p δ_{p,o}(x) x̃_{s·p+t, c}(x)) (Σ_q δ_{q,o}(x') x̃_{s·q+t, c}(x'))
    Θ̂_b(x, x') = b_scale² Σ_j Σ_o (Σ_p δ_{p,o}(x)) (Σ_q δ_{q,o}(x')),

x̃ the layer's (padded) input, p, q output positions, t the filter taps, s the strides. For a Dense
layer without spatial axes this is ⟨δ(x), δ(x')⟩ · ⟨x̃(x), x̃(x')⟩: two small Gram matrices instead
of a Jacobian with a row per parameter (the "structured derivatives" idea of Novak et al. 2022,
"Fast Finite Width Neural Tangent Kernel"). With positions the sum is evaluated either as position
Gram matrices summed along shifted diagonals, or from per-example weight gradients (a batched
matmul of δ with the input patches), whichever needs fewer flops. Memory scales with points × width (× positions), never
with points × parameters. ``empirical_kernels_autodiff`` is the plain Jacobian contraction, kept as
the reference the tests check this against.

Reproducibility: sample i is the network ``build_network(spec, input_shape, seed=sample_seed(seed,
i))``, whatever ``batch_size``, device or tiling, so the same (spec, seed, samples) gives the same
networks everywhere and any block K(x1[a:b], x2[c:d]) equals the block of the whole matrix (up to
floating-point summation order). Points never interact (no layer mixes batch entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .kernel import KERNELS, NonFiniteKernel, as_points, check_inputs, overflow_advice, resolve_device
from ntk.spec.cost import FEATURE_ELEMENTS  # budget (elements) for the features of one batch of points
from .interrupt import ShouldStop, Steps, Stopped
from .networks import Affine, Network, build_network
from ntk.spec.architecture import Architecture, SpecError
from ntk.spec.limits import DEFAULT_SAMPLES, MAX_SAMPLES

# Largest intermediate (elements) a contraction builds at once; larger ones are split.
CHUNK_ELEMENTS = 1 << 25


def sample_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th network of a Monte Carlo estimate seeded ``seed``.

    Derived with numpy's SeedSequence, so samples are independent streams and each can be built
    on its own (another worker, another tile) without drawing the ones before it.
    """
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def monte_carlo_kernel_fn(
    spec: Architecture | dict | str,
    x1,
    x2=None,
    get: Sequence[str] = KERNELS,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    should_stop: ShouldStop | None = None,
) -> dict[str, Tensor]:
    """Mean over ``samples`` finite networks of the empirical NNGP and/or NTK, with standard errors.

    Returns, for each name in ``get``, ``name`` (N1, N2), the mean of the per-network empirical
    kernels (module docstring), and ``name + "_stderr"`` (N1, N2), the standard error of that mean,
    std(ddof=1) / √samples; with a single sample the standard error is unknown and is NaN.

    x2 = None means x2 = x1 (the result is then exactly symmetric). ``batch_size`` splits x1 and x2
    into blocks of that many points, bounding memory as neural-tangents' ``batch_size`` does; it
    does not change the result beyond rounding. ``progress(done, samples)`` is called after each
    network, from which a caller can report progress. ``should_stop()`` is asked before each network
    and between blocks of points (``interrupt``); when it answers True, ``Stopped`` is raised. Raises ``SpecError``
    (naming the offending field) for invalid arguments, ``NonFiniteKernel`` if a network's output
    or gradient overflows.
    """
    arch = Architecture.parse(spec)
    get = tuple(get)
    unknown = [g for g in get if g not in KERNELS]
    if unknown or not get:
        raise SpecError(("get",), f"get must name some of {list(KERNELS)}, got {list(get)}")
    samples = _check_int(samples, "samples", 1, MAX_SAMPLES)
    seed = _check_int(seed, "seed", 0, 2**63 - 1)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1, None)
    device = resolve_device(device)
    x1 = as_points(x1, dtype, device)
    x2 = None if x2 is None else as_points(x2, dtype, device)
    check_inputs(arch, x1, x2)
    input_shape = tuple(x1.shape[1:])

    mean: dict[str, Tensor] = {}
    m2: dict[str, Tensor] = {}
    steps = Steps(samples, should_stop, progress)
    for i in range(samples):
        steps.check()
        net = build_network(arch, input_shape, seed=sample_seed(seed, i), dtype=dtype, device=device)
        one = empirical_kernels(net, x1, x2, get, batch_size=batch_size, should_stop=should_stop)
        for name in get:
            value = one[name].to(torch.float64)
            if not torch.isfinite(value).all():
                raise NonFiniteKernel(overflow_advice(f"a sampled network's empirical {name}", dtype))
            if i == 0:
                mean[name] = value.clone()
                m2[name] = torch.zeros_like(value)
            else:  # Welford's update: stable for many samples of nearly equal kernels
                delta = value - mean[name]
                mean[name] += delta / (i + 1)
                m2[name] += delta * (value - mean[name])
        steps.advance()

    out = {}
    for name in get:
        out[name] = mean[name].to(dtype)
        if samples > 1:
            out[name + "_stderr"] = torch.sqrt(m2[name] / ((samples - 1) * samples)).to(dtype)
        else:
            out[name + "_stderr"] = torch.full_like(out[name], math.nan)
    return out


def _check_int(value, name: str, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError((name,), f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"≥ {low}" if high is None else f"between {low} and {high}"
        raise SpecError((name,), f"{name} must be {bound}, got {value}")
    return value


# -- one network -----------------------------------------------------------------------------


def empirical_kernels(
    net: Network,
    x1: Tensor,
    x2: Tensor | None = None,
    get: Sequence[str] = KERNELS,
    batch_size: int | None = None,
    should_stop: ShouldStop | None = None,
    route: Literal["gram", "grads"] | None = None,
) -> dict[str, Tensor]:
    """The empirical NNGP and/or NTK of one network, each (N1, N2), the output axis traced out.

    Equal to ``empirical_kernels_autodiff`` (the plain Jacobian contraction) up to rounding, at a
    fraction of its memory. x2 = None means x2 = x1, and the result is exactly symmetric.
    ``batch_size`` (default: as many points as keep one block's features near FEATURE_ELEMENTS)
    splits x1 and x2 into blocks whose kernels are computed one pair at a time; before each pair
    ``should_stop()`` is asked, and ``Stopped`` raised when it answers True. ``route`` picks
    how spatial weight sharing is summed (position Gram matrices, or per-example weight
    gradients; default: whichever needs fewer flops, layer by layer).
    """
    get = tuple(get)
    need_ntk = "ntk" in get
    symmetric = x2 is None
    other = x1 if symmetric else x2
    n1, n2 = x1.shape[0], other.shape[0]
    step = batch_size or max(1, FEATURE_ELEMENTS // _feature_size(net, need_ntk))
    if n1 <= step and n2 <= step:
        f1 = _features(net, x1, need_ntk)
        f2 = f1 if symmetric else _features(net, other, need_ntk)
        out = _contract(net, f1, f2, get, symmetric, route)
    else:
        out = {name: x1.new_empty((n1, n2)) for name in get}
        for i0 in range(0, n1, step):
            f1 = _features(net, x1[i0:i0 + step], need_ntk)
            for j0 in range(i0 if symmetric else 0, n2, step):
                if should_stop is not None and should_stop():
                    raise Stopped(i0 * n2 + j0, n1 * n2)
                same = symmetric and i0 == j0
                f2 = f1 if same else _features(net, other[j0:j0 + step], need_ntk)
                block = _contract(net, f1, f2, get, same, route)
                for name in get:
                    out[name][i0:i0 + step, j0:j0 + step] = block[name]
                    if symmetric and not same:
                        out[name][j0:j0 + step, i0:i0 + step] = block[name].T
    if symmetric:
        out = {name: (value + value.T) / 2 for name, value in out.items()}
    return out


def _feature_size(net: Network, need_ntk: bool) -> int:
    """Elements held per point while computing its features (inputs, δ's, and the backward's
    own activations, roughly as many again)."""
    k = net.output_shape[-1]
    if not need_ntk:
        return 2 * sum(math.prod(m.out_shape) for m in net.affine_layers()) + k
    per_layer = [math.prod(m.padded_shape) + k * math.prod(m.out_shape) for m in net.affine_layers()]
    return 2 * sum(per_layer) + k


@dataclass
class _Features:
    """What the kernels of a block of points need: outputs, each affine layer's input and δ."""

    out: Tensor                       # (n, k)
    inputs: list[Tensor] | None       # per affine layer: (n, *padded_spatial, C)
    deltas: list[Tensor] | None       # per affine layer: (k, n, *out_spatial, O) = ∂f_j / ∂y


def _features(net: Network, x: Tensor, need_ntk: bool) -> _Features:
    # The outer no_grad keeps autograd from recording the parameters' graph; torch.func's vjp
    # still differentiates with respect to the probes (function transforms ignore outer no_grad).
    with torch.no_grad():
        if not need_ntk:
            return _Features(net(x), None, None)
        layers = net.affine_layers()
        probes = [x.new_zeros((x.shape[0],) + layer.out_shape) for layer in layers]
        out, vjp_fn, inputs = torch.func.vjp(lambda p: net.forward_with_tape(x, p), probes, has_aux=True)
        k = out.shape[1]
        cotangents = torch.eye(k, dtype=out.dtype, device=out.device)[:, None, :].expand(k, x.shape[0], k)
        (deltas,) = torch.func.vmap(vjp_fn)(cotangents)
        return _Features(out, list(inputs), list(deltas))


def _contract(net: Network, f1: _Features, f2: _Features, get, symmetric: bool, route) -> dict[str, Tensor]:
    k = f1.out.shape[1]
    out = {}
    if "nngp" in get:
        out["nngp"] = f1.out @ f2.out.T / k
    if "ntk" in get:
        ntk = f1.out.new_zeros((f1.out.shape[0], f2.out.shape[0]))
        for i, layer in enumerate(net.affine_layers()):
            ntk += _layer_ntk(layer, f1.inputs[i], f1.deltas[i], f2.inputs[i], f2.deltas[i], symmetric, route)
        out["ntk"] = ntk / k
    return out


def _layer_ntk(layer: Affine, x1: Tensor, d1: Tensor, x2: Tensor, d2: Tensor, symmetric: bool,
               route: str | None) -> Tensor:
    """One affine layer's share of Σ_j ⟨∂f_j(x1)/∂θ, ∂f_j(x2)/∂θ⟩ over its weight and bias."""
    k, n1 = d1.shape[:2]
    n2 = d2.shape[1]
    spatial_ndim = x1.ndim - 2
    ntk = x1.new_zeros((n1, n2))
    if layer.bias is not None and layer.b_scale != 0.0:
        s1 = d1.sum(dim=tuple(range(2, d1.ndim - 1))) if spatial_ndim else d1   # (k, n, O)
        s2 = d2.sum(dim=tuple(range(2, d2.ndim - 1))) if spatial_ndim else d2
        ntk += layer.b_scale**2 * _flat(s1) @ _flat(s2).T
    if layer.w_scale == 0.0:
        return ntk
    if spatial_ndim == 0:
        ntk += layer.w_scale**2 * (_flat(d1) @ _flat(d2).T) * (x1 @ x2.T)
        return ntk
    channels, out_chan = x1.shape[-1], d1.shape[-1]
    p_in, p_out = math.prod(x1.shape[1:-1]), math.prod(d1.shape[2:-1])
    taps = math.prod(layer.filter_shape)
    gram_flops = n1 * n2 * (p_out * p_out * (k * out_chan + taps) + p_in * p_in * channels)
    grad_flops = (n1 + n2) * k * out_chan * channels * taps * p_out + n1 * n2 * k * out_chan * channels * taps
    if (route or ("gram" if gram_flops <= grad_flops else "grads")) == "gram":
        ntk += layer.w_scale**2 * _weight_ntk_gram(layer, x1, d1, x2, d2)
    else:
        ntk += layer.w_scale**2 * _weight_ntk_grads(layer, x1, d1, x2, d2, symmetric)
    return ntk


def _flat(d: Tensor) -> Tensor:
    """(k, n, ..., O) -> (n, k·...·O)."""
    return d.movedim(0, 1).reshape(d.shape[1], -1)


def _weight_ntk_gram(layer: Affine, x1, d1, x2, d2) -> Tensor:
    """Σ_{p,q} ⟨δ_p(x1), δ_q(x2)⟩ · Σ_t ⟨x̃_{s·p+t}(x1), x̃_{s·q+t}(x2)⟩, in row chunks."""
    k, n1 = d1.shape[:2]
    n2 = d2.shape[1]
    in_spatial, out_spatial = tuple(x1.shape[1:-1]), tuple(d1.shape[2:-1])
    p_in, p_out = math.prod(in_spatial), math.prod(out_spatial)
    # δ as (n, P_out, k·O) and x̃ as (n, P_in, C): Gram matrices over (point, position) pairs.
    a2 = d2.movedim(0, -2).reshape(n2 * p_out, -1)
    b2 = x2.reshape(n2 * p_in, -1)
    rows = max(1, CHUNK_ELEMENTS // max(1, n2 * max(p_in, p_out) ** 2))
    result = []
    for r0 in range(0, n1, rows):
        dc, xc = d1[:, r0:r0 + rows], x1[r0:r0 + rows]
        m = xc.shape[0]
        a = (dc.movedim(0, -2).reshape(m * p_out, -1) @ a2.T).reshape(m, p_out, n2, p_out)
        b = (xc.reshape(m * p_in, -1) @ b2.T).reshape((m,) + in_spatial + (n2,) + in_spatial)
        b = _shifted_diagonal_sum(b, layer.filter_shape, layer.strides, out_spatial)
        result.append((a * b.reshape(m, p_out, n2, p_out)).sum(dim=(1, 3)))
    return torch.cat(result)


def _shifted_diagonal_sum(b: Tensor, filter_shape, strides, out_spatial) -> Tensor:
    """(m, *S_in, n, *S_in) -> (m, *S_out, n, *S_out): Σ_t b[:, s·p + t, :, s·q + t]."""
    nd = len(filter_shape)
    total = None
    for tap in np.ndindex(*filter_shape):
        index = [slice(None)]
        for t, s, n in zip(tap, strides, out_spatial):
            index.append(slice(t, t + s * (n - 1) + 1, s))
        index = index + index[:1] + index[1:nd + 1]
        part = b[tuple(index)]
        total = part if total is None else total + part
    return total


def _weight_ntk_grads(layer: Affine, x1, d1, x2, d2, symmetric: bool) -> Tensor:
    """Σ_j ⟨G_j(x1), G_j(x2)⟩ with G the per-example weight gradients, in output-channel chunks."""
    k, n1 = d1.shape[:2]
    n2 = d2.shape[1]
    channels, out_chan = x1.shape[-1], d1.shape[-1]
    taps = math.prod(layer.filter_shape)
    chunk = max(1, CHUNK_ELEMENTS // max(1, (n1 + n2) * k * channels * taps))
    ntk = x1.new_zeros((n1, n2))
    for o0 in range(0, out_chan, chunk):
        g1 = _example_weight_grads(layer, x1, d1[..., o0:o0 + chunk])
        g2 = g1 if symmetric else _example_weight_grads(layer, x2, d2[..., o0:o0 + chunk])
        ntk += g1 @ g2.T
    return ntk


def _example_weight_grads(layer: Affine, x: Tensor, d: Tensor) -> Tensor:
    """Per-example weight gradients G[o, (c, t)] = Σ_p δ_{p,o} x̃_{s·p+t, c} as (n, k·O·C·T).

    One batched matmul per block of points: δ (n, k·O, P_out) @ patches (n, P_out, C·T).
    """
    k, n = d.shape[:2]
    out_spatial = tuple(d.shape[2:-1])
    p_out = math.prod(out_spatial)
    patch = x.shape[-1] * math.prod(layer.filter_shape)
    rows = max(1, CHUNK_ELEMENTS // max(1, p_out * patch))
    out = []
    for r0 in range(0, n, rows):
        xc, dc = x[r0:r0 + rows], d[:, r0:r0 + rows]
        m = xc.shape[0]
        delta = dc.movedim(0, 1).movedim(-1, 2).reshape(m, -1, p_out)       # (m, k·O, P_out)
        out.append(torch.bmm(delta, _patches(xc, layer.filter_shape, layer.strides)).reshape(m, -1))
    return torch.cat(out)


def _patches(x: Tensor, filter_shape, strides) -> Tensor:
    """(m, *S_pad, C) -> (m, P_out, C·T): the input window under each output position."""
    m = x.shape[0]
    for axis, (w, s) in enumerate(zip(filter_shape, strides), start=1):
        x = x.unfold(axis, w, s)                 # window axis appended: (m, *S_out, C, *T)
    p_out = math.prod(x.shape[1:1 + len(filter_shape)])
    return x.reshape(m, p_out, -1)


# -- reference -------------------------------------------------------------------------------


def empirical_kernels_autodiff(net: Network, x1: Tensor, x2: Tensor | None = None,
                               get: Sequence[str] = KERNELS) -> dict[str, Tensor]:
    """The same kernels by brute force: full Jacobians ∂f/∂θ (torch.func.jacrev), contracted.

    Memory grows with points × outputs × parameters: for checking ``empirical_kernels`` on small
    networks only.
    """
    params = {name: p.detach() for name, p in net.named_parameters()}
    f = lambda p, x: torch.func.functional_call(net, p, (x,))
    out = {}
    o1 = f(params, x1)
    o2 = o1 if x2 is None else f(params, x2)
    k = o1.shape[1]
    if "nngp" in get:
        out["nngp"] = o1 @ o2.T / k
    if "ntk" in get:
        j1 = torch.func.jacrev(f)(params, x1)
        j2 = j1 if x2 is None else torch.func.jacrev(f)(params, x2)
        ntk = o1.new_zeros((o1.shape[0], o2.shape[0]))
        for name in params:
            a = j1[name].reshape(o1.shape[0], k, -1)
            b = j2[name].reshape(o2.shape[0], k, -1)
            ntk += torch.einsum("nkp,mkp->nm", a, b)
        out["ntk"] = ntk / k
    return out
