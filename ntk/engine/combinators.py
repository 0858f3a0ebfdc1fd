"""Composition of layers: stax.serial, and the residual block FanOut(2) >> parallel >> FanInSum."""

from __future__ import annotations

from ntk.spec import architecture as spec
from .layers import LAYERS
from .state import KernelState


def serial(layers, k: KernelState, parameterization: str) -> KernelState:
    """Layers in sequence: each maps the kernel state of its input to that of its output."""
    for layer in layers:
        if isinstance(layer, spec.Residual):
            k = residual(layer, k, parameterization)
        else:
            k = LAYERS[layer.type](layer, k, parameterization)
    return k


def residual(layer: spec.Residual, k: KernelState, parameterization: str) -> KernelState:
    """y = branch(x) + shortcut(x), the shortcut the identity unless given.

    The two paths have independent weights, so their outputs are uncorrelated and every kernel
    of the sum is the sum of the paths' kernels. The sum is Gaussian only if both paths are.
    """
    a = serial(layer.layers, k, parameterization)
    b = serial(layer.shortcut or [], k, parameterization)
    return a.replace(
        nngp=a.nngp + b.nngp,
        ntk=None if a.ntk is None else a.ntk + b.ntk,
        cov1=a.cov1 + b.cov1,
        cov2=None if a.cov2 is None else a.cov2 + b.cov2,
        is_gaussian=a.is_gaussian and b.is_gaussian,
        is_input=a.is_input and b.is_input,
    )
