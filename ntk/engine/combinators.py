"""Composition of layers: stax.serial, and the residual block FanOut(2) >> parallel >> FanInSum."""

from __future__ import annotations

from ntk.spec import architecture as spec

from .interrupt import Steps
from .layers import LAYERS
from .state import KernelState


def serial(layers, k: KernelState, parameterization: str, steps: Steps | None = None) -> KernelState:
    """Layers in sequence: each maps the kernel state of its input to that of its output.

    Each layer (a Residual block and each layer inside it too) is one of ``steps``: checked for a
    stop before it runs, counted after.
    """
    for layer in layers:
        if steps is not None:
            steps.check()
        if isinstance(layer, spec.Residual):  # its sub-stacks' layers are steps too
            k = residual(layer, k, parameterization, steps)
        else:
            k = LAYERS[layer.type](layer, k, parameterization)
        if steps is not None:
            steps.advance()
    return k


@LAYERS.of(spec.Residual)
def residual(layer: spec.Residual, k: KernelState, parameterization: str, steps: Steps | None = None) -> KernelState:
    """y = branch(x) + shortcut(x), the shortcut the identity unless given.

    The two paths have independent weights, so their outputs are uncorrelated and every kernel
    of the sum is the sum of the paths' kernels. The sum is Gaussian only if both paths are.
    """
    a = serial(layer.layers, k, parameterization, steps)
    b = serial(layer.shortcut or [], k, parameterization, steps)
    return a.replace(
        nngp=a.nngp + b.nngp,
        ntk=None if a.ntk is None else a.ntk + b.ntk,
        cov1=a.cov1 + b.cov1,
        cov2=None if a.cov2 is None else a.cov2 + b.cov2,
        is_gaussian=a.is_gaussian and b.is_gaussian,
        is_input=a.is_input and b.is_input,
    )


LAYERS.complete()
