"""Finite networks of a spec: the architecture instantiated at its widths ``out_dim``/``out_chan``.

``build_network(spec, input_shape, seed=...)`` returns a ``torch.nn.Module`` whose parameters are
ordinary ``nn.Parameter``s, initialized and parameterized exactly as neural-tangents' stax layers
(``init_fn``/``apply_fn``) do, and whose ``forward`` is pure (it reads the parameters, changes
nothing), so ``torch.func.functional_call``, ``vmap``, ``jacrev`` and plain gradient descent all
apply. Inputs are channels-last, as the engine takes them: (N, d), (N, L, C) or (N, H, W, C); the
output is (N, k).

Parameterization (Jacot et al. 2018; Lee et al. 2019, "Wide Neural Networks of Any Depth Evolve as
Linear Models Under Gradient Descent", §2; Novak et al. 2020, neural-tangents ``stax.Dense/Conv``),
with n the fan-in (input channels × filter size):

* ``"ntk"``:      W, b ~ N(0, 1) at init;  y = (w_std / √n) · W ⋆ x + b_std · b.
* ``"standard"``: W ~ N(0, w_std² / n), b ~ N(0, b_std²) at init;  y = W ⋆ x + b.

Both give the same function at initialization (the same NNGP); they differ in the gradient scale,
hence in the NTK. A layer with ``b_std = None`` has no bias parameter at all. Biases are shared
over spatial positions (one per output channel), as in stax.

Each affine layer stores ``weight`` and optionally ``bias`` and exposes ``w_scale``/``b_scale``,
the constants the forward multiplies them by (w_std/√n and b_std under "ntk"; 1 and 1 under
"standard"), which ``monte_carlo`` uses to contract Jacobians layer by layer.

Parameters are drawn from a ``torch.Generator`` in a fixed order (layers in sequence, a Residual's
branch before its shortcut, each layer's weight before its bias) on the generator's device (CPU
by default), as float32 standard normals scaled in float64 and then cast, so one seed gives the
same network on every device and in every dtype (up to the cast's rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntk.spec import architecture as S

# Each layer type's finite module, by name: built as Module(layer, in_shape, init) (init: ``_Init``,
# which parameter-free modules ignore), attached where it is defined.
FINITE_MODULES = S.PerLayerType("finite module")

# Standard normals are drawn in float32 (3-4x faster than float64 on CPU, where drawing dominates
# the cost of a wide sampled network) and scaled in float64; N(0, 1) rounded to 24 bits is
# indistinguishable from N(0, 1) for every statistic computed here.
DRAW_DTYPE = torch.float32


def build_network(
    spec: S.Architecture | dict | str,
    input_shape: Sequence[int],
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> Network:
    """A freshly initialized finite network of ``spec`` taking points of shape ``input_shape``.

    ``input_shape`` is one point's shape without the batch axis: (d,), (L, C) or (H, W, C). The
    random draws come from ``generator`` when given, else from a CPU generator seeded with ``seed``
    (0 when None). Raises ``SpecError`` when the spec cannot run on such inputs.
    """
    arch = S.Architecture.parse(spec)
    input_shape = tuple(int(n) for n in input_shape)
    arch.check(input_shape)
    if generator is None:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(0 if seed is None else int(seed))
    elif seed is not None:
        raise ValueError("pass either generator or seed, not both")
    device = torch.device("cpu") if device is None else torch.device(device)
    return Network(arch, input_shape, generator, dtype, device)


class Network(nn.Module):
    """The spec's layers in sequence (stax.serial). ``forward(x)``: (N, *input_shape) -> (N, k)."""

    def __init__(self, arch: S.Architecture, input_shape: tuple[int, ...], generator: torch.Generator,
                 dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.arch = arch
        self.parameterization = arch.parameterization
        self.input_shape = input_shape
        init = _Init(generator, dtype, device, arch.parameterization)
        self.body = Serial(arch.layers, input_shape, init)
        self.output_shape = self.body.out_shape

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"the network takes points of shape {self.input_shape}, got {tuple(x.shape[1:])}")
        return self.body(x)

    def affine_layers(self) -> list[Affine]:
        """Every Dense and Conv layer, in the order the forward pass runs them."""
        return [m for m in self.modules() if isinstance(m, Affine)]

    def forward_with_tape(self, x: Tensor, probes: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The forward pass with ``probes[i]`` added to the i-th affine layer's output.

        Returns (output, inputs): ``inputs[i]`` is what the i-th affine layer contracted with its
        weight (its input, padded for a convolution). With zero probes the output is the plain
        forward's; d output / d probe[i] is the backpropagated signal at that layer's output,
        from which ``monte_carlo`` assembles the NTK without per-parameter Jacobians.
        """
        tape = _Tape(list(probes))
        out = self.body(x, tape)
        if tape.probes:
            raise AssertionError("more probes than affine layers")
        return out, tape.inputs


class _Init:
    """How parameters are drawn: from ``generator``, in ``dtype`` on ``device``, scaled for ``parameterization``."""

    def __init__(self, generator: torch.Generator, dtype: torch.dtype, device: torch.device, parameterization: str):
        self.generator, self.dtype, self.device = generator, dtype, device
        self.parameterization = parameterization

    def normal(self, shape: tuple[int, ...], scale: float = 1.0) -> nn.Parameter:
        value = torch.randn(shape, generator=self.generator, dtype=DRAW_DTYPE, device=self.generator.device)
        return nn.Parameter((value.to(torch.float64) * scale).to(device=self.device, dtype=self.dtype))


class _Tape:
    """Per-call recorder for ``forward_with_tape`` (the modules themselves hold no call state)."""

    def __init__(self, probes: list[Tensor]):
        self.probes = probes
        self.inputs: list[Tensor] = []

    def affine(self, x: Tensor, y: Tensor) -> Tensor:
        self.inputs.append(x)
        if not self.probes:
            raise AssertionError("fewer probes than affine layers")
        return y + self.probes.pop(0)


# -- containers ------------------------------------------------------------------------------


class Serial(nn.Module):
    def __init__(self, layers, in_shape: tuple[int, ...], init: _Init):
        super().__init__()
        modules = []
        shape = in_shape
        for layer in layers:
            module = FINITE_MODULES[layer.type](layer, shape, init)
            modules.append(module)
            shape = module.out_shape
        self.layers = nn.ModuleList(modules)
        self.in_shape, self.out_shape = in_shape, shape

    def forward(self, x: Tensor, tape: _Tape | None = None) -> Tensor:
        for module in self.layers:
            x = module(x, tape)
        return x


@FINITE_MODULES.of(S.Residual)
class Residual(nn.Module):
    """y = branch(x) + shortcut(x): stax FanOut(2) >> parallel(branch, shortcut) >> FanInSum."""

    def __init__(self, layer: S.Residual, in_shape, init: _Init):
        super().__init__()
        self.branch = Serial(layer.layers, in_shape, init)
        self.shortcut = Serial(layer.shortcut or [], in_shape, init)
        self.in_shape, self.out_shape = in_shape, self.branch.out_shape

    def forward(self, x: Tensor, tape: _Tape | None = None) -> Tensor:
        return self.branch(x, tape) + self.shortcut(x, tape)


# -- affine layers ---------------------------------------------------------------------------


class Affine(nn.Module):
    """Common part of Dense and Conv: y = w_scale · W ⋆ x + b_scale · b (see the module docstring).

    ``filter_shape``/``strides`` describe the weight sharing over positions (all ones for Dense,
    which acts on the channel axis at every position); ``pad`` maps the input to the array the
    weight slides over.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_params(self, weight_shape, fan_in: int, out: int, w_std: float, b_std: float | None, init: _Init):
        self.fan_in = fan_in
        if init.parameterization == "ntk":
            self.weight = init.normal(weight_shape)
            self.bias = None if b_std is None else init.normal((out,))
            self.w_scale = w_std / math.sqrt(fan_in)
            self.b_scale = 0.0 if b_std is None else b_std
        else:
            self.weight = init.normal(weight_shape, w_std / math.sqrt(fan_in))
            self.bias = None if b_std is None else init.normal((out,), b_std)
            self.w_scale = 1.0
            self.b_scale = 1.0

    def pad(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor, tape: _Tape | None = None) -> Tensor:
        x = self.pad(x)
        y = self.contract(x)
        if self.w_scale != 1.0:
            y = self.w_scale * y
        if self.bias is not None:
            y = y + (self.bias if self.b_scale == 1.0 else self.b_scale * self.bias)
        return y if tape is None else tape.affine(x, y)


@FINITE_MODULES.of(S.Dense)
class Dense(Affine):
    """stax.Dense: weight (in, out) applied to the last axis, at every position if there are any."""

    def __init__(self, layer: S.Dense, in_shape, init: _Init):
        super().__init__()
        channels = in_shape[-1]
        self.in_shape, self.out_shape = in_shape, in_shape[:-1] + (layer.out_dim,)
        self.padded_shape = in_shape
        self.filter_shape = (1,) * (len(in_shape) - 1)
        self.strides = self.filter_shape
        self._init_params((channels, layer.out_dim), channels, layer.out_dim, layer.w_std, layer.b_std, init)

    def contract(self, x: Tensor) -> Tensor:
        return x @ self.weight


@FINITE_MODULES.of(S.Conv)
class Conv(Affine):
    """stax.Conv: weight (out, in, *filter), channels-last in and out, XLA's padding conventions.

    SAME pads zeros, CIRCULAR wraps around; both split the padding low = total // 2 (XLA's SAME),
    so the output has ceil(n / stride) positions. VALID does not pad.
    """

    def __init__(self, layer: S.Conv, in_shape, init: _Init):
        super().__init__()
        spatial, channels = in_shape[:-1], in_shape[-1]
        self.filter_shape = tuple(layer.filter_shape)
        self.strides = tuple(layer.strides or (1,) * len(self.filter_shape))
        self.padding = layer.padding
        self.pads = [S.same_pads(n, w, s) if layer.padding != "VALID" else (0, 0)
                     for n, w, s in zip(spatial, self.filter_shape, self.strides)]
        self.padded_shape = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, self.pads)) + (channels,)
        out_spatial = tuple((n - w) // s + 1 for n, w, s in zip(self.padded_shape[:-1], self.filter_shape,
                                                                 self.strides))
        self.in_shape, self.out_shape = in_shape, out_spatial + (layer.out_chan,)
        fan_in = channels * math.prod(self.filter_shape)
        self._init_params((layer.out_chan, channels) + self.filter_shape, fan_in, layer.out_chan,
                          layer.w_std, layer.b_std, init)
        self._conv = F.conv1d if len(self.filter_shape) == 1 else F.conv2d

    def pad(self, x: Tensor) -> Tensor:
        return pad_spatial(x, self.pads, self.padding)

    def contract(self, x: Tensor) -> Tensor:
        y = self._conv(channels_first(x), self.weight, stride=self.strides)
        return channels_last(y)


def pad_spatial(x: Tensor, pads: Sequence[tuple[int, int]], padding: str) -> Tensor:
    """Pad the spatial axes (1 .. ndim-2) of a channels-last batch: zeros (SAME) or wrap (CIRCULAR)."""
    if padding == "VALID" or not any(lo or hi for lo, hi in pads):
        return x
    for axis, (lo, hi) in enumerate(pads, start=1):
        if not (lo or hi):
            continue
        n = x.shape[axis]
        if padding == "CIRCULAR":
            index = torch.arange(-lo, n + hi, device=x.device) % n
            x = x.index_select(axis, index)
        else:
            shape = list(x.shape)
            x = torch.cat([x.new_zeros(shape[:axis] + [lo] + shape[axis + 1:]), x,
                           x.new_zeros(shape[:axis] + [hi] + shape[axis + 1:])], dim=axis)
    return x


def channels_first(x: Tensor) -> Tensor:
    return x.movedim(-1, 1)


def channels_last(x: Tensor) -> Tensor:
    return x.movedim(1, -1)


# -- parameter-free layers -------------------------------------------------------------------


@FINITE_MODULES.of(S.AvgPool)
class AvgPool(nn.Module):
    """stax.AvgPool: window sums divided by the whole window size (normalize_edges=False).

    SAME pads with zeros, CIRCULAR wraps; strides default to 1 as in neural-tangents.
    """

    def __init__(self, layer: S.AvgPool, in_shape, init: _Init):
        super().__init__()
        spatial = in_shape[:-1]
        self.window = tuple(layer.window_shape)
        self.strides = tuple(layer.strides or (1,) * len(self.window))
        self.padding = layer.padding
        self.pads = [S.same_pads(n, w, s) if layer.padding != "VALID" else (0, 0)
                     for n, w, s in zip(spatial, self.window, self.strides)]
        padded = [n + lo + hi for n, (lo, hi) in zip(spatial, self.pads)]
        out = tuple((n - w) // s + 1 for n, w, s in zip(padded, self.window, self.strides))
        self.in_shape, self.out_shape = in_shape, out + in_shape[-1:]
        self._pool = F.avg_pool1d if len(self.window) == 1 else F.avg_pool2d

    def forward(self, x: Tensor, tape: _Tape | None = None) -> Tensor:
        x = pad_spatial(x, self.pads, self.padding)
        return channels_last(self._pool(channels_first(x), self.window, self.strides))


@FINITE_MODULES.of(S.GlobalAvgPool)
class GlobalAvgPool(nn.Module):
    """stax.GlobalAvgPool: the mean over all spatial positions."""

    def __init__(self, layer: S.GlobalAvgPool, in_shape, init: _Init):
        super().__init__()
        self.in_shape, self.out_shape = in_shape, in_shape[-1:]

    def forward(self, x: Tensor, tape: _Tape | None = None) -> Tensor:
        return x.mean(dim=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x


@FINITE_MODULES.of(S.Flatten)
class Flatten(nn.Module):
    """stax.Flatten: (N, ..., C) -> (N, prod) in row-major (channels-last) order."""

    def __init__(self, layer: S.Flatten, in_shape, init: _Init):
        super().__init__()
        self.in_shape, self.out_shape = in_shape, (math.prod(in_shape),)

    def forward(self, x: Tensor, tape: _Tape | None = None) -> Tensor:
        return x.reshape(x.shape[0], -1)


@FINITE_MODULES.of(S.LayerNorm)
class LayerNorm(nn.Module):
    """stax.LayerNorm: (x − mean) / sqrt(ε + var) over ``axis`` of the (N, ..., C) array, ε = 1e-12.

    The variance is the biased one (ddof 0), as jnp.var. No learned scale or shift.
    """

    def __init__(self, layer: S.LayerNorm, in_shape, init: _Init):
        super().__init__()
        ndim = len(in_shape) + 1
        self.axes = tuple(sorted({a % ndim for a in layer.axis}))
        self.in_shape, self.out_shape = in_shape, in_shape

    def forward(self, x: Tensor, tape: _Tape | None = None) -> Tensor:
        mean = x.mean(dim=self.axes, keepdim=True)
        var = (x - mean).square().mean(dim=self.axes, keepdim=True)
        return (x - mean) / torch.sqrt(S.LAYER_NORM_EPS + var)


class Activation(nn.Module):
    """An elementwise layer: y = φ(x), φ as stax's apply_fn computes it."""

    def __init__(self, layer, in_shape, fn):
        super().__init__()
        self.kind = layer.type
        self.fn = fn
        self.in_shape, self.out_shape = in_shape, in_shape

    def forward(self, x: Tensor, tape: _Tape | None = None) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.kind


def activation(*models):
    """Attach ``phi(layer) -> φ`` as these layer types' finite module: an ``Activation`` applying φ."""
    def attach(phi):
        FINITE_MODULES.of(*models)(lambda layer, in_shape, init: Activation(layer, in_shape, phi(layer)))
        return phi
    return attach


def _ab_relu(a: float, b: float):
    # neural-tangents' form a·min(x, 0) + b·max(x, 0); torch.minimum/maximum split the gradient
    # at a tie (x = 0) in halves as jnp.minimum/maximum do, so even exact zeros differentiate alike.
    def fn(x: Tensor) -> Tensor:
        zero = x.new_zeros(())
        return a * torch.minimum(x, zero) + b * torch.maximum(x, zero)
    return fn


@activation(S.Relu)
def relu(layer: S.Relu):
    return _ab_relu(0.0, 1.0)


@activation(S.LeakyRelu)
def leaky_relu(layer: S.LeakyRelu):
    return _ab_relu(layer.alpha, 1.0)


@activation(S.ABRelu)
def ab_relu(layer: S.ABRelu):
    return _ab_relu(layer.a, layer.b)


@activation(S.Abs)
def abs_(layer: S.Abs):
    return torch.abs


@activation(S.Sign)
def sign(layer: S.Sign):
    return torch.sign


@activation(S.Identity)
def identity(layer: S.Identity):
    return lambda x: x


@activation(S.Erf)
def erf(layer: S.Erf):
    a, b, c = layer.a, layer.b, layer.c
    return lambda x: a * torch.erf(b * x) + c


@activation(S.Gelu)
def gelu(layer: S.Gelu):
    approximate = "tanh" if layer.approximate else "none"
    return lambda x: F.gelu(x, approximate=approximate)


@activation(S.Sin)
def sin(layer: S.Sin):
    a, b, c = layer.a, layer.b, layer.c
    return lambda x: a * torch.sin(b * x + c)


ELEMENTWISE_FNS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "silu": F.silu,
    "elu": F.elu,
}


@activation(S.Elementwise)
def elementwise(layer: S.Elementwise):
    return ELEMENTWISE_FNS[layer.fn]


FINITE_MODULES.complete()
