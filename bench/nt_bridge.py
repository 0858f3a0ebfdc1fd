"""The architecture JSON (docs/architecture.md) as a neural-tangents ``stax`` model: the one
translation the oracle fixtures (tests/engine/generate_*fixtures.py) and the benchmark's NT worker
(bench/nt_worker.py) share, so that what is compared against NT is the same network everywhere.

Needs jax and neural-tangents only (not torch, not this repository's packages). Omitted
parameters take NT's defaults, which the spec's defaults are (for AvgPool's strides: (1, ..., 1),
not the window shape); an explicit null takes the default too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from neural_tangents import stax

# Elementwise's named functions, as the spec names them (ntk.spec.architecture.Elementwise).
ELEMENTWISE_FNS = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
}


def layer_to_stax(layer: dict, parameterization: str):
    """One layer as an NT ``(init_fn, apply_fn, kernel_fn)``; a parameter NT would not receive is an error."""
    t = layer["type"]
    p = {k: v for k, v in layer.items() if k != "type"}

    def take(name, default=None):
        value = p.pop(name, default)
        return default if value is None else value

    def shape(name):
        value = take(name)
        return None if value is None else tuple(value)

    if t == "Dense":
        out = stax.Dense(take("out_dim"), W_std=take("w_std", 1.0), b_std=take("b_std"),
                         parameterization=parameterization)
    elif t == "Conv":
        out = stax.Conv(take("out_chan"), shape("filter_shape"), strides=shape("strides"),
                        padding=take("padding", "VALID"), W_std=take("w_std", 1.0), b_std=take("b_std"),
                        parameterization=parameterization)
    elif t in ("Relu", "Abs", "Sign", "Identity"):
        out = getattr(stax, t)()
    elif t == "LeakyRelu":
        out = stax.LeakyRelu(take("alpha"))
    elif t == "ABRelu":
        out = stax.ABRelu(take("a"), take("b"))
    elif t in ("Erf", "Sin"):
        out = getattr(stax, t)(a=take("a", 1.0), b=take("b", 1.0), c=take("c", 0.0))
    elif t == "Gelu":
        out = stax.Gelu(approximate=bool(take("approximate", False)))
    elif t == "Elementwise":
        out = stax.ElementwiseNumerical(ELEMENTWISE_FNS[take("fn")], deg=take("degree", 64))
    elif t == "AvgPool":
        out = stax.AvgPool(shape("window_shape"), strides=shape("strides"), padding=take("padding", "VALID"))
    elif t == "GlobalAvgPool":
        out = stax.GlobalAvgPool()
    elif t == "Flatten":
        out = stax.Flatten()
    elif t == "LayerNorm":
        axis = take("axis", [-1])
        out = stax.LayerNorm(axis=tuple(axis) if isinstance(axis, list) else axis)
    elif t == "Residual":
        branch = serial_to_stax(take("layers"), parameterization)
        shortcut = serial_to_stax(take("shortcut") or [], parameterization)
        out = stax.serial(stax.FanOut(2), stax.parallel(branch, shortcut), stax.FanInSum())
    else:
        raise ValueError(f"unknown layer type {t!r}")
    if p:
        raise ValueError(f"unused parameters for {t}: {sorted(p)}")
    return out


def serial_to_stax(layers: list, parameterization: str):
    if not layers:
        return stax.Identity()
    return stax.serial(*(layer_to_stax(layer, parameterization) for layer in layers))


def to_stax(spec: dict):
    """The architecture as NT's ``(init_fn, apply_fn, kernel_fn)``."""
    return serial_to_stax(spec["layers"], spec.get("parameterization", "ntk"))
