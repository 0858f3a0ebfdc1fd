"""The architecture spec language (docs/architecture.md) as pydantic models.

A spec is JSON: ``{"parameterization": "ntk", "layers": [{"type": "Dense", "out_dim": 512}, ...]}``.
Each layer type is one model below; the ``type`` field selects it. Defaults are neural-tangents'.
Field-level problems (unknown type or field, wrong type, non-finite or out-of-range values) are
pydantic errors; problems of the stack as a whole (an activation whose input is not Gaussian, an
input shape the stack cannot take, spatial axes left at the output) are ``SpecError`` from
``Architecture.check``. Both carry the JSON path of what is wrong.

A layer type is one entry of ``LAYER_REGISTRY``: its model, its shape rule (a pure function, next to
the model) and its roles. The cost model (ntk.spec.cost) and the engine (its kernel maps and finite
modules) attach their own rule for each type to the same name (``PerLayerType``), and refuse at
import to run with a type left without one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import prod
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

# The deepest stack accepted by default, layers inside Residual blocks counted: the default of the
# service's NTK_MAX_LAYERS (ntk.core.settings), which callers pass to ``Architecture.check`` as
# ``max_layers``. A kernel's cost is linear in depth; 1024 covers deep-kernel studies.
MAX_LAYERS = 1024
# The most layers one list may hold whatever NTK_MAX_LAYERS says (the setting cannot exceed it): a
# longer list is refused while parsing, before its layers are built (~10 µs each, 0.16 s here).
LAYERS_CEILING = 1 << 14
MAX_RESIDUAL_NESTING = 8
MAX_STD = 1e3
MAX_WIDTH = 1 << 20
MAX_FILTER = 64

Std = Annotated[float, Field(ge=0.0, le=MAX_STD)]
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Slope = Annotated[float, Field(ge=-1e3, le=1e3)]
Padding = Literal["VALID", "SAME", "CIRCULAR"]
Window = Annotated[list[Annotated[int, Field(ge=1, le=MAX_FILTER)]], Field(min_length=1, max_length=2)]


class SpecError(ValueError):
    """A spec that parses but cannot describe this network on these inputs."""

    def __init__(self, path: tuple, message: str):
        self.errors = [{"path": format_path(path), "message": message}]
        super().__init__(f"{format_path(path)}: {message}")


def format_path(path: tuple) -> str:
    """('layers', 2, 'w_std') -> 'layers[2].w_std'"""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Layer(BaseModel):
    # strict: a parameter of the wrong JSON type (true or "512" for a number) is an error, not coerced
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


# -- the shape walk ------------------------------------------------------------------------------
# Each layer type has a shape rule: a pure function (layer, walk, path) -> walk that propagates one
# point's shape and Gaussianity past the layer, or raises SpecError naming what is wrong at ``path``.


@dataclass(frozen=True)
class Walk:
    """Where a walk through the stack stands: one point's ``shape`` (None when no input shape was
    given), whether the layer output is ``gaussian`` (what an activation needs), the finite network's
    ``parameters`` and its ``affine`` layers so far, as (input channels, filter taps, output channels,
    input positions, output positions), counted where the shape is known, and the Residual
    ``nesting`` of the layers being walked."""

    shape: tuple[int, ...] | None
    gaussian: bool = False
    parameters: int = 0
    affine: tuple[tuple[int, int, int, int, int], ...] = ()
    nesting: int = 0


def walk(layers, state: Walk, path: tuple) -> Walk:
    """The walk past ``layers`` in sequence (stax.serial), each by its layer type's shape rule."""
    for i, layer in enumerate(layers):
        state = step(layer, state, path + (i,))
    return state


def step(layer, state: Walk, path: tuple) -> Walk:
    """The walk past one layer (at ``path``), by its layer type's shape rule."""
    return LAYER_REGISTRY[layer.type].shape(layer, state, path)


def output_shape(shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """A walk's final shape, once it is that of a network's output: (k,) per point (or unknown)."""
    if shape is not None and len(shape) != 1:
        raise SpecError(("layers",), f"the network output has shape {shape} per point, "
                        "not (k,): add Flatten or GlobalAvgPool before the last Dense")
    return shape


def _affine(state: Walk, out_shape: tuple[int, ...] | None, taps: int, bias: bool) -> Walk:
    """Past an affine layer: a Gaussian output, and its weights (and biases) counted."""
    if state.shape is None:
        return replace(state, gaussian=True)
    channels, out = state.shape[-1], out_shape[-1]
    return replace(state, shape=out_shape, gaussian=True, parameters=state.parameters + (channels * taps + bias) * out,
                   affine=state.affine + ((channels, taps, out, prod(state.shape[:-1]), prod(out_shape[:-1])),))


def _gaussian_input(layer, state: Walk, path: tuple, message: str) -> None:
    if not state.gaussian:
        raise SpecError(path, f"{layer.type} needs a Gaussian input: {message}")


class Dense(Layer):
    """A fully connected layer on the last axis: z = w_std/√n · W x + b_std · β with W, β standard
    normal (NTK parameterization; "standard" puts the 1/√n in W's initialization). ``out_dim``: the
    width (only Monte Carlo uses it; the analytic kernel is its infinite limit). ``b_std``: null for no
    bias. neural-tangents: ``stax.Dense``."""

    type: Literal["Dense"]
    out_dim: Width
    w_std: Std = 1.0
    b_std: Std | None = None


def dense_shape(layer: Dense, state: Walk, path: tuple) -> Walk:
    """(..., C) -> (..., out_dim), whatever its input."""
    out_shape = None if state.shape is None else state.shape[:-1] + (layer.out_dim,)
    return _affine(state, out_shape, 1, layer.b_std is not None)


class Conv(Layer):
    """A convolution over the spatial axes of ``(N, H, W, C)`` or ``(N, L, C)`` inputs (channels last).
    ``filter_shape``: [h, w] or [k]; ``strides``: default 1 on each axis; ``padding``: VALID, SAME or
    CIRCULAR; ``w_std``/``b_std`` as for Dense, the weight variance divided by the fan-in
    (filter size × input channels). neural-tangents: ``stax.Conv``."""

    type: Literal["Conv"]
    out_chan: Width
    filter_shape: Window
    strides: Window | None = None
    padding: Padding = "VALID"
    w_std: Std = 1.0
    b_std: Std | None = None


def conv_shape(layer: Conv, state: Walk, path: tuple) -> Walk:
    """(*spatial, C) -> (*windowed spatial, out_chan), on 1-D or 2-D spatial inputs."""
    _check_spatial(layer, state.shape, path, len(layer.filter_shape), "filter_shape")
    out_shape = None if state.shape is None else _window_output(
        state.shape[:-1], layer.filter_shape, layer.strides, layer.padding, path, "filter_shape") + (layer.out_chan,)
    return _affine(state, out_shape, prod(layer.filter_shape), layer.b_std is not None)


def activation_shape(layer, state: Walk, path: tuple) -> Walk:
    """Any activation: the shape unchanged; its input must be Gaussian, its output is not."""
    _gaussian_input(layer, state, path, "put a Dense or Conv directly before it (an activation cannot act on "
                    "the input or on another activation's output)")
    return replace(state, gaussian=False)


class Relu(Layer):
    """φ(x) = max(x, 0): the arc-cosine kernel of degree 1 (Cho & Saul 2009). ``stax.Relu``."""

    type: Literal["Relu"]


class Abs(Layer):
    """φ(x) = |x|. ``stax.Abs``."""

    type: Literal["Abs"]


class Sign(Layer):
    """φ(x) = sign(x): the arc-cosine kernel of degree 0; its NTK contribution is zero away from
    x = 0. ``stax.Sign``."""

    type: Literal["Sign"]


class Identity(Layer):
    """φ(x) = x: passes the kernel through unchanged. ``stax.Identity``."""

    type: Literal["Identity"]


def identity_shape(layer, state: Walk, path: tuple) -> Walk:
    """Nothing changes (Identity is linear, so a Gaussian input stays Gaussian)."""
    return state


class LeakyRelu(Layer):
    """φ(x) = x for x ≥ 0, ``alpha``·x below. ``stax.LeakyRelu``."""

    type: Literal["LeakyRelu"]
    alpha: Slope


class ABRelu(Layer):
    """φ(x) = ``a``·x for x < 0, ``b``·x for x ≥ 0 (Relu is a = 0, b = 1). ``stax.ABRelu``."""

    type: Literal["ABRelu"]
    a: Slope
    b: Slope


class Erf(Layer):
    """φ(x) = ``a``·erf(``b``·x) + ``c``, in closed form (Williams 1997). ``stax.Erf``."""

    type: Literal["Erf"]
    a: Slope = 1.0
    b: Slope = 1.0
    c: Slope = 0.0


class Gelu(Layer):
    """φ(x) = x·Φ(x) (Hendrycks & Gimpel 2016), in closed form. ``approximate``: the tanh form
    in finite (Monte Carlo) networks; as in neural-tangents, the analytic kernel is the exact one
    either way. ``stax.Gelu``."""

    type: Literal["Gelu"]
    approximate: bool = False


class Sin(Layer):
    """φ(x) = ``a``·sin(``b``·x + ``c``), in closed form. ``stax.Sin``."""

    type: Literal["Sin"]
    a: Slope = 1.0
    b: Slope = 1.0
    c: Slope = 0.0


class Elementwise(Layer):
    """A smooth activation without a closed-form kernel, integrated numerically: ``fn`` is tanh,
    sigmoid, softplus, silu or elu; ``degree`` is the number of Gauss–Legendre nodes per axis, half
    on each side of 0. neural-tangents: ``stax.ElementwiseNumerical`` (docs/accuracy.md says where the two differ)."""

    type: Literal["Elementwise"]
    fn: Literal["tanh", "sigmoid", "softplus", "silu", "elu"]
    degree: Annotated[int, Field(ge=2, le=256)] = 96


class AvgPool(Layer):
    """Average pooling over the spatial axes: ``window_shape`` [h, w] or [k]; ``strides`` default
    1 on each axis (neural-tangents' default, not the window); ``padding`` VALID, SAME or CIRCULAR.
    ``stax.AvgPool``."""

    type: Literal["AvgPool"]
    window_shape: Window
    strides: Window | None = None
    padding: Padding = "VALID"


def avg_pool_shape(layer: AvgPool, state: Walk, path: tuple) -> Walk:
    """(*spatial, C) -> (*windowed spatial, C), on 1-D or 2-D spatial inputs."""
    _check_spatial(layer, state.shape, path, len(layer.window_shape), "window_shape")
    if state.shape is None:
        return state
    return replace(state, shape=_window_output(state.shape[:-1], layer.window_shape, layer.strides, layer.padding,
                                               path, "window_shape") + state.shape[-1:])


class GlobalAvgPool(Layer):
    """The mean over all spatial positions: ``(N, H, W, C)`` → ``(N, C)``. ``stax.GlobalAvgPool``."""

    type: Literal["GlobalAvgPool"]


def global_avg_pool_shape(layer: GlobalAvgPool, state: Walk, path: tuple) -> Walk:
    """(*spatial, C) -> (C,), on 1-D or 2-D spatial inputs."""
    _check_spatial(layer, state.shape, path, None, None)
    return state if state.shape is None else replace(state, shape=state.shape[-1:])


class Flatten(Layer):
    """Spatial positions and channels into one axis: ``(N, H, W, C)`` → ``(N, H·W·C)``. ``stax.Flatten``."""

    type: Literal["Flatten"]


def flatten_shape(layer: Flatten, state: Walk, path: tuple) -> Walk:
    """(*spatial, C) -> (prod,)."""
    return state if state.shape is None else replace(state, shape=(prod(state.shape),))


# LayerNorm divides by sqrt(eps + variance), as stax.LayerNorm does; the kernel map and the finite
# network use the same eps.
LAYER_NORM_EPS = 1e-12


class LayerNorm(Layer):
    """Normalizes over ``axis`` (counted over the whole ``(N, ..., C)`` array as in
    ``stax.LayerNorm``: [-1] the channels, [1, 2, 3] height, width and channels of an image)."""

    type: Literal["LayerNorm"]
    axis: Annotated[list[Annotated[int, Field(ge=-4, le=3)]], Field(min_length=1, max_length=4)] = [-1]

    @field_validator("axis", mode="before")
    @classmethod
    def _scalar_axis(cls, v):
        return [v] if isinstance(v, int) else v


def layer_norm_shape(layer: LayerNorm, state: Walk, path: tuple) -> Walk:
    """The shape unchanged; a Gaussian input, normalized over axes that include the channels."""
    _gaussian_input(layer, state, path, "put a Dense or Conv before it")
    if state.shape is not None:
        ndim = len(state.shape) + 1  # axes count over the whole (N, ..., C) array, as in stax
        axes = set()
        for a in layer.axis:
            if not -ndim <= a < ndim or a % ndim == 0:
                raise SpecError(path + ("axis",), f"axis {a} is not a spatial or channel axis "
                                f"of inputs shaped (N, {', '.join(map(str, state.shape))})")
            axes.add(a % ndim)
        if ndim - 1 not in axes:
            raise SpecError(path + ("axis",), "LayerNorm must normalize over the channel "
                            "axis (-1) for the infinite-width kernel to exist")
    return state


class Residual(Layer):
    """The sum of a branch (``layers``) and a ``shortcut`` (default: the identity):
    ``FanOut(2) >> parallel(serial(*layers), serial(*shortcut)) >> FanInSum`` in neural-tangents."""

    type: Literal["Residual"]
    layers: Annotated[list[AnyLayer], Field(min_length=1, max_length=LAYERS_CEILING)]
    shortcut: Annotated[list[AnyLayer], Field(max_length=LAYERS_CEILING)] | None = None


def residual_shape(layer: Residual, state: Walk, path: tuple) -> Walk:
    """Branch and shortcut walked from the same input, one level deeper; their outputs must match
    (the sum is Gaussian only if both are). The finite network's branch comes before its shortcut."""
    nesting = state.nesting + 1
    if nesting > MAX_RESIDUAL_NESTING:
        raise SpecError(path, f"Residual blocks nest {nesting} deep; at most {MAX_RESIDUAL_NESTING} are allowed")
    branch = walk(layer.layers, replace(state, nesting=nesting), path + ("layers",))
    shortcut = walk(layer.shortcut or [], replace(branch, shape=state.shape, gaussian=state.gaussian),
                    path + ("shortcut",))
    if branch.shape != shortcut.shape:
        raise SpecError(path, f"the branch outputs shape {branch.shape} per point but the "
                        f"shortcut outputs {shortcut.shape}; they must match to be summed")
    return replace(shortcut, gaussian=branch.gaussian and shortcut.gaussian, nesting=state.nesting)


def _check_spatial(layer, shape, path, window_ndim, field):
    if shape is None:
        return
    spatial_ndim = len(shape) - 1
    if spatial_ndim < 1:
        raise SpecError(path, f"{layer.type} needs spatial axes, but its input has shape "
                        f"{shape} per point (inputs are (N, L, C) or (N, H, W, C))")
    if window_ndim is not None and window_ndim != spatial_ndim:
        raise SpecError(path + (field,), f"{field} has {window_ndim} entries but the input has "
                        f"{spatial_ndim} spatial axes")
    if spatial_ndim > 2:
        raise SpecError(path, "only 1-D and 2-D spatial inputs are supported")


def _window_output(spatial, window, strides, padding, path, field) -> tuple[int, ...]:
    strides = strides or [1] * len(window)
    if len(strides) != len(window):
        raise SpecError(path + ("strides",), f"strides has {len(strides)} entries but {field} has {len(window)}")
    if padding == "VALID":
        for n, w in zip(spatial, window):
            if w > n:
                raise SpecError(path + (field,), f"window {w} is larger than the input size {n} "
                                "with VALID padding")
    return window_output(spatial, window, strides, padding)


def window_output(spatial, window, strides, padding) -> tuple[int, ...]:
    """The positions a window (a Conv filter, a pool) takes on each spatial axis: ⌊(n − w)/s⌋ + 1
    with VALID padding, ⌈n/s⌉ with SAME and CIRCULAR (XLA's convention, as neural-tangents)."""
    if padding == "VALID":
        return tuple((n - w) // s + 1 for n, w, s in zip(spatial, window, strides))
    return tuple(-(-n // s) for n, s in zip(spatial, strides))


# -- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerType:
    """What the spec knows of one layer type: its pydantic ``model`` (whose fields carry the
    parameters' defaults and bounds), its ``shape`` rule, and its roles: ``affine`` (weights; a
    Gaussian output whatever the input), ``activation`` (a Gaussian input, a non-Gaussian output),
    ``needs_full_spatial`` (reads covariances between different positions: pooling) and
    ``reads_variances`` (reads each point's variance at each position). The engine attaches its kernel
    map and finite module to the same name (``PerLayerType``)."""

    model: type[Layer]
    shape: Callable[[Layer, Walk, tuple], Walk]
    affine: bool = False
    activation: bool = False
    needs_full_spatial: bool = False
    reads_variances: bool = False


ACTIVATION_ROLES = {"activation": True, "reads_variances": True}

# Every layer type, by its ``type``; in the order the spec language lists them (docs, OpenAPI).
LAYER_REGISTRY: dict[str, LayerType] = {entry.model.__name__: entry for entry in (
    LayerType(Dense, dense_shape, affine=True),
    LayerType(Conv, conv_shape, affine=True),
    LayerType(Relu, activation_shape, **ACTIVATION_ROLES),
    LayerType(Abs, activation_shape, **ACTIVATION_ROLES),
    LayerType(Sign, activation_shape, **ACTIVATION_ROLES),
    LayerType(Identity, identity_shape),
    LayerType(LeakyRelu, activation_shape, **ACTIVATION_ROLES),
    LayerType(ABRelu, activation_shape, **ACTIVATION_ROLES),
    LayerType(Erf, activation_shape, **ACTIVATION_ROLES),
    LayerType(Gelu, activation_shape, **ACTIVATION_ROLES),
    LayerType(Sin, activation_shape, **ACTIVATION_ROLES),
    LayerType(Elementwise, activation_shape, **ACTIVATION_ROLES),
    LayerType(AvgPool, avg_pool_shape, needs_full_spatial=True),
    LayerType(GlobalAvgPool, global_avg_pool_shape, needs_full_spatial=True),
    LayerType(Flatten, flatten_shape),
    LayerType(LayerNorm, layer_norm_shape, reads_variances=True),
    LayerType(Residual, residual_shape),
)}
LAYER_TYPES = {name: entry.model for name, entry in LAYER_REGISTRY.items()}


def layer_type(layer: Layer) -> LayerType:
    return LAYER_REGISTRY[layer.type]


class PerLayerType(dict):
    """One concern's rule for every registered layer type, by name: the cost model's work
    (ntk.spec.cost), the engine's kernel map and finite module. Each rule is attached where it is
    defined, by decorating it with ``table.of(Model, ...)``; ``complete()`` raises naming the layer
    types still without one, so that a layer type cannot be half added."""

    def __init__(self, concern: str):
        super().__init__()
        self.concern = concern

    def of(self, *models: type[Layer]):
        def attach(rule):
            for model in models:
                name = model.__name__
                if LAYER_TYPES.get(name) is not model:
                    raise TypeError(f"{name} is not a registered layer type (ntk.spec.architecture.LAYER_REGISTRY)")
                if name in self:
                    raise TypeError(f"{name} has two {self.concern}s")
                self[name] = rule
            return rule
        return attach

    def complete(self) -> PerLayerType:
        missing = [name for name in LAYER_REGISTRY if name not in self]
        if missing:
            raise TypeError(f"layer types without a {self.concern}: {', '.join(missing)}")
        return self


AnyLayer = Annotated[Union[tuple(LAYER_TYPES.values())], Field(discriminator="type")]
Residual.model_rebuild()


class Architecture(BaseModel):
    """A whole network: ``layers`` run in sequence (``stax.serial``); ``parameterization`` is "ntk" or
    "standard", as in neural-tangents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameterization: Literal["ntk", "standard"] = "ntk"
    # max_length refuses a list longer than any accepted stack before its layers are parsed (one
    # layer costs ~10 µs); ``check`` counts the layers inside Residual blocks against the setting.
    layers: Annotated[list[AnyLayer], Field(min_length=1, max_length=LAYERS_CEILING)]

    @classmethod
    def parse(cls, spec: "Architecture | dict | str") -> Architecture:
        if isinstance(spec, Architecture):
            return spec
        if isinstance(spec, str):
            return cls.model_validate_json(spec)
        return cls.model_validate(spec)

    def canonical_json(self) -> str:
        """Defaults filled in, keys sorted: equal networks give equal strings."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def depth(self) -> int:
        """The number of layers, those inside Residual branches and shortcuts included."""
        return sum(1 for _ in iter_layers(self.layers))

    def check(self, input_shape: tuple[int, ...] | None = None, max_layers: int | None = None
              ) -> tuple[int, ...] | None:
        """Walk the stack as the kernel will, raising SpecError at the first layer that cannot run.

        ``input_shape`` is one point's shape (no batch axis): (d,), (L, C) or (H, W, C). Returns the
        output shape of one point, (k,), or None when no input shape was given. ``max_layers``: the
        most layers allowed, Residual blocks' included (the caller's NTK_MAX_LAYERS setting); None
        for no limit.
        """
        count = self.depth()
        if max_layers is not None and count > max_layers:
            raise SpecError(("layers",), f"the network has {count} layers; at most {max_layers} are allowed "
                            "(NTK_MAX_LAYERS)")
        return output_shape(self.walk(input_shape).shape)

    def walk(self, input_shape: tuple[int, ...] | None) -> Walk:
        """The walk through the whole stack from points of ``input_shape`` (see ``Walk``); raises
        SpecError at the first layer that cannot run."""
        return walk(self.layers, Walk(None if input_shape is None else tuple(input_shape)), ("layers",))

    def parameters(self, input_shape: tuple[int, ...]) -> int:
        """How many parameters a finite network of this architecture has on points of ``input_shape``
        (what a Monte Carlo estimate draws per sample): a Dense layer's fan-in × out_dim weights and a
        Conv layer's in_chan × filter taps × out_chan, plus out_dim (out_chan) biases where b_std is
        set; both paths of a Residual block. Raises SpecError as ``check`` does."""
        return self.walk(input_shape).parameters

    def needs_full_spatial(self) -> bool:
        """Whether any layer needs covariances between different positions (only pooling does).

        Every layer before a pooling layer must then track them too; we track them for the whole
        stack, which costs nothing extra after the pooling has removed the spatial axes.
        """
        return any(layer_type(layer).needs_full_spatial for layer in iter_layers(self.layers))

    def covariances_need_full_spatial(self) -> bool:
        """Whether the per-point covariances (cov1, cov2) must keep every pair of positions too.

        Layers read a point's covariance with itself only through its variance at each position
        (nonlinearities and LayerNorm), and convolutions, nonlinearities and Flatten map those
        variances alone. Only a pooled variance needs the other pairs, so unless a pooling layer
        comes before a layer that reads variances, the variances alone are tracked: P numbers per
        point instead of P² (CNN-GAP on 8×8 images: 1.3× faster in all).
        """
        layers = list(iter_layers(self.layers))
        first_pool = next((i for i, layer in enumerate(layers) if layer_type(layer).needs_full_spatial), None)
        return first_pool is not None and any(layer_type(layer).reads_variances for layer in layers[first_pool:])


def iter_layers(layers):
    for layer in layers:
        yield layer
        if isinstance(layer, Residual):
            yield from iter_layers(layer.layers)
            yield from iter_layers(layer.shortcut or [])


def same_pads(n: int, window: int, stride: int) -> tuple[int, int]:
    """XLA's SAME padding of an axis of size n: output ceil(n / s), the odd unit at the high end.
    Shared by the kernel maps and the finite networks, so both pad exactly alike."""
    out = -(-n // stride)
    total = max((out - 1) * stride + window - n, 0)
    return total // 2, total - total // 2


def validation_errors(error: ValidationError) -> list[dict]:
    """pydantic's errors as [{"path", "message"}] with JSON paths like layers[2].w_std; an unknown
    parameter that spells a known one differently adds ``"suggestion"``: its known name."""
    out = []
    for e in error.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in LAYER_TYPES))
        holder = layer_model(e["loc"]) or (Architecture if len(e["loc"]) == 1 else None)
        out.append(suggest({"path": format_path(loc) or "$", "message": e["msg"]}, e, holder))
    return out


def spelling(name: str) -> str:
    """A name as read regardless of case, underscores and hyphens: W_std, w-std and wStd are wstd."""
    return re.sub(r"[_\-]", "", name.lower())


def respelled(name: str, model: type[BaseModel]) -> str | None:
    """The field of ``model`` that the unknown ``name`` spells another way (neural-tangents' W_std is w_std)."""
    return next((known for known in model.model_fields if spelling(known) == spelling(name)), None)


def layer_model(loc: tuple) -> type[Layer] | None:
    """The layer type a pydantic error location ends in: (..., "layers", 0, "Dense", "W_std") -> Dense."""
    return LAYER_TYPES.get(loc[-2]) if len(loc) >= 2 and isinstance(loc[-2], str) else None


def suggest(entry: dict, error: dict, model: type[BaseModel] | None) -> dict:
    """``entry`` (the {"path", "message"} of a pydantic ``error``), with the known name of an unknown
    field of ``model`` that spells it another way: in the message and as ``"suggestion"``."""
    name = error["loc"][-1] if error["loc"] else None
    if error["type"] != "extra_forbidden" or model is None or not isinstance(name, str):
        return entry
    known = respelled(name, model)
    if known is None:
        return entry
    return {**entry, "message": f"unknown parameter {name}: did you mean {known}?", "suggestion": known}


LayerAdapter = TypeAdapter(AnyLayer)
