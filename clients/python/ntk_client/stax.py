"""Architecture builder with the names of ``neural_tangents.stax``.

Each function returns a :class:`Layer`; :func:`serial` chains them into an architecture whose
:meth:`Serial.to_dict` is the architecture JSON of the service (docs/architecture.md)::

    >>> from ntk_client import stax
    >>> stax.serial(stax.Dense(512, w_std=1.5), stax.Relu(), stax.Dense(1)).to_dict()
    {'layers': [{'type': 'Dense', 'out_dim': 512, 'w_std': 1.5}, {'type': 'Relu'}, {'type': 'Dense', 'out_dim': 1}]}

A layer emits the parameters the caller passed, and no others. Defaults are the server's to fill
in (it canonicalizes every spec before hashing it), so the SDK never has to agree with it about
what a default is, and the JSON shows exactly what the user wrote.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "Layer", "Serial", "serial", "Stack", "stack",
    "Dense", "Conv", "Relu", "LeakyRelu", "ABRelu", "Abs", "Sign", "Identity", "Erf", "Gelu",
    "Sin", "Elementwise", "AvgPool", "GlobalAvgPool", "Flatten", "LayerNorm", "Residual",
]


class _Default:
    """Marks a parameter the caller did not pass, so that it is left out of the JSON.

    Its repr is the neural-tangents default, so ``help(stax.Dense)`` reads ``w_std=1.0``.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _given(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if not isinstance(value, _Default)}


def _jsonable(value: Any) -> Any:
    """Plain JSON values from what users naturally pass: tuples, numpy scalars, nested layers."""
    if isinstance(value, (Layer, Serial)):
        return value.to_dict()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_jsonable(v) for v in value]
    raise TypeError(f"{value!r} is not a value an architecture spec can hold")


def _shape(value: Any) -> Any:
    # neural-tangents wants tuples for shapes; a lone int for a 1-D filter or window is common
    # enough (and unambiguous) to accept.
    return [value] if isinstance(value, numbers.Integral) else value


class Layer:
    """One layer of an architecture: its ``type`` (docs/architecture.md) and the parameters given for it."""

    __slots__ = ("type", "params")

    def __init__(self, type: str, **params: Any) -> None:
        self.type = type
        self.params = params

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **{name: _jsonable(v) for name, v in self.params.items()}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.params.items())
        return f"{self.type}({args})"


class Serial:
    """Layers run in sequence: the architecture spec sent to the service.

    Anything that takes an architecture takes this, its :meth:`to_dict`, or the JSON text.
    """

    __slots__ = ("layers", "parameterization")

    def __init__(self, layers: list[Layer], parameterization: str | _Default) -> None:
        self.layers = layers
        self.parameterization = parameterization

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if not isinstance(self.parameterization, _Default):
            spec["parameterization"] = self.parameterization
        spec["layers"] = [layer.to_dict() for layer in self.layers]
        return spec

    def to_json(self, **dumps_kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **dumps_kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Serial) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json(sort_keys=True))

    def __repr__(self) -> str:
        inner = ", ".join(map(repr, self.layers))
        if not isinstance(self.parameterization, _Default):
            inner += f", parameterization={self.parameterization!r}"
        return f"serial({inner})"


def _flatten(layers: Iterable[Layer | Serial]) -> list[Layer]:
    # As in neural-tangents, serial(serial(a, b), c) is serial(a, b, c).
    flat: list[Layer] = []
    for layer in layers:
        if isinstance(layer, Serial):
            flat.extend(layer.layers)
        elif isinstance(layer, Layer):
            flat.append(layer)
        else:
            raise TypeError(f"expected a stax layer, got {layer!r}")
    return flat


def serial(*layers: Layer | Serial, parameterization: str = _Default("ntk")) -> Serial:
    """Layers in sequence (``stax.serial``). ``parameterization`` is "ntk" or "standard"."""
    if not layers:
        raise ValueError("serial() needs at least one layer")
    return Serial(_flatten(layers), parameterization)


class Stack:
    """``stem + block × depth + readout``: the base of a sweep whose grid varies the depth
    (``Client.sweep``; the JSON ``{"stem", "block", "depth", "readout"}`` of docs/rest.md, Sweeps)."""

    __slots__ = ("stem", "block", "depth", "readout", "parameterization")

    def __init__(self, stem: list[Layer], block: list[Layer], depth: int | _Default, readout: list[Layer],
                 parameterization: str | _Default) -> None:
        self.stem, self.block, self.depth, self.readout = stem, block, depth, readout
        self.parameterization = parameterization

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if not isinstance(self.parameterization, _Default):
            spec["parameterization"] = self.parameterization
        if self.stem:
            spec["stem"] = [layer.to_dict() for layer in self.stem]
        spec["block"] = [layer.to_dict() for layer in self.block]
        if not isinstance(self.depth, _Default):
            spec["depth"] = int(self.depth)
        spec["readout"] = [layer.to_dict() for layer in self.readout]
        return spec

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stack) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"stack({self.to_dict()!r})"


def _layers(part: Layer | Serial | Iterable[Layer | Serial]) -> list[Layer]:
    return _flatten([part] if isinstance(part, (Layer, Serial)) else part)


def stack(block: Layer | Serial | Iterable[Layer | Serial], readout: Layer | Serial | Iterable[Layer | Serial], *,
          stem: Layer | Serial | Iterable[Layer | Serial] = (), depth: int = _Default(1),
          parameterization: str = _Default("ntk")) -> Stack:
    """The network ``stem + block × depth + readout``, whose ``depth`` (repetitions of the block:
    hidden layers, for a [Dense, activation] block) a sweep's grid may vary::

        stax.stack(stax.serial(stax.Dense(512), stax.Relu()), stax.Dense(1))   # depth 1 by default
    """
    block, readout = _layers(block), _layers(readout)
    if not block or not readout:
        raise ValueError("stack() needs a block and a readout of at least one layer each")
    return Stack(_layers(stem), block, depth, readout, parameterization)


def Dense(out_dim: int, w_std: float = _Default(1.0), b_std: float | None = _Default(None)) -> Layer:
    """Fully connected layer on the last axis; ``b_std=None`` means no bias."""
    return Layer("Dense", out_dim=out_dim, **_given(w_std=w_std, b_std=b_std))


def Conv(
    out_chan: int,
    filter_shape: tuple[int, ...] | int,
    strides: tuple[int, ...] | None = _Default(None),
    padding: str = _Default("VALID"),
    w_std: float = _Default(1.0),
    b_std: float | None = _Default(None),
) -> Layer:
    """Convolution, channels last; ``padding`` is "VALID", "SAME" or "CIRCULAR"."""
    if not isinstance(strides, _Default) and strides is not None:
        strides = _shape(strides)
    return Layer(
        "Conv", out_chan=out_chan, filter_shape=_shape(filter_shape),
        **_given(strides=strides, padding=padding, w_std=w_std, b_std=b_std),
    )


def Relu() -> Layer:
    return Layer("Relu")


def LeakyRelu(alpha: float) -> Layer:
    return Layer("LeakyRelu", alpha=alpha)


def ABRelu(a: float, b: float) -> Layer:
    """``a * min(x, 0) + b * max(x, 0)``."""
    return Layer("ABRelu", a=a, b=b)


def Abs() -> Layer:
    return Layer("Abs")


def Sign() -> Layer:
    return Layer("Sign")


def Identity() -> Layer:
    return Layer("Identity")


def Erf(a: float = _Default(1.0), b: float = _Default(1.0), c: float = _Default(0.0)) -> Layer:
    """``a * erf(b * x) + c``."""
    return Layer("Erf", **_given(a=a, b=b, c=c))


def Gelu(approximate: bool = _Default(False)) -> Layer:
    return Layer("Gelu", **_given(approximate=approximate))


def Sin(a: float = _Default(1.0), b: float = _Default(1.0), c: float = _Default(0.0)) -> Layer:
    """``a * sin(b * x + c)``."""
    return Layer("Sin", **_given(a=a, b=b, c=c))


def Elementwise(fn: str, degree: int = _Default(96)) -> Layer:
    """A named activation ("tanh", "sigmoid", "softplus", "silu", "elu") integrated numerically
    with ``degree`` nodes per axis (``stax.ElementwiseNumerical``, whose Gauss-Hermite rule the
    server replaces by one that converges: it differs from neural-tangents by that rule's error)."""
    return Layer("Elementwise", fn=fn, **_given(degree=degree))


def AvgPool(
    window_shape: tuple[int, ...] | int,
    strides: tuple[int, ...] | None = _Default(None),
    padding: str = _Default("VALID"),
) -> Layer:
    """Average pooling over ``window_shape``. ``strides=None`` is 1 along each axis (neural-tangents'
    default), not the window: pass ``strides=window_shape`` for non-overlapping windows."""
    if not isinstance(strides, _Default) and strides is not None:
        strides = _shape(strides)
    return Layer("AvgPool", window_shape=_shape(window_shape), **_given(strides=strides, padding=padding))


def GlobalAvgPool() -> Layer:
    return Layer("GlobalAvgPool")


def Flatten() -> Layer:
    return Layer("Flatten")


def LayerNorm(axis: tuple[int, ...] | int = _Default((-1,))) -> Layer:
    if not isinstance(axis, _Default):
        axis = _shape(axis)
    return Layer("LayerNorm", **_given(axis=axis))


def Residual(*branch: Layer | Serial, shortcut: Layer | Serial | Iterable[Layer] | None = None) -> Layer:
    """``branch(x) + shortcut(x)``; the shortcut is the identity unless layers are given.

    Equivalent to neural-tangents' ``FanOut(2) >> parallel(serial(*branch), shortcut) >> FanInSum()``.
    """
    if not branch:
        raise ValueError("Residual() needs at least one layer in its branch")
    params: dict[str, Any] = {"layers": _flatten(branch)}
    if shortcut is not None:
        params["shortcut"] = _flatten([shortcut] if isinstance(shortcut, (Layer, Serial)) else shortcut)
    return Layer("Residual", **params)
