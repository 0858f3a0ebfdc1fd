"""Every builder case, placed in a network, is a spec the engine (ntk.engine) accepts and computes.

The JSON-level tests pin the builder to the architecture JSON; this checks the same JSON against the project's
own parser, so that builder and server cannot drift apart unnoticed. Skipped where the engine
(PyTorch) is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sdk_stax import CASES

from ntk_client import stax

engine = pytest.importorskip("ntk.engine", reason="the kernel engine (torch) is not installed")

rng = np.random.default_rng(0)
IMAGES = rng.normal(size=(3, 6, 6, 2))  # (N, H, W, C)
SEQUENCES = rng.normal(size=(3, 7, 2))  # (N, L, C)
VECTORS = rng.normal(size=(3, 5))

SPATIAL = {"Conv", "AvgPool", "GlobalAvgPool", "Flatten", "LayerNorm"}


def in_context(layer):
    """A whole network around `layer`, and inputs of the shape it takes."""
    kind = layer.to_dict()["type"]
    if kind == "Conv" or (kind == "Residual" and "Conv" in str(layer)):
        x = SEQUENCES if len(layer.to_dict().get("filter_shape", [0, 0])) == 1 else IMAGES
        width = layer.to_dict().get("out_chan", 8)
        return stax.serial(stax.Conv(width, (3,) * (x.ndim - 2), padding="SAME"), layer, stax.Flatten(), stax.Dense(1)), x
    if kind in SPATIAL:
        tail = [] if kind in ("GlobalAvgPool", "Flatten") else [stax.Flatten()]
        return stax.serial(stax.Conv(4, (3, 3), padding="SAME"), layer, *tail, stax.Dense(1)), IMAGES
    if kind == "Residual":
        return stax.serial(stax.Dense(64), layer, stax.Dense(1)), VECTORS
    return stax.serial(stax.Dense(16, b_std=0.1), layer, stax.Dense(1)), VECTORS


@pytest.mark.parametrize("layer", [layer for layer, _ in CASES], ids=[repr(layer) for layer, _ in CASES])
def test_engine_computes_the_builders_spec(layer):
    arch, x = in_context(layer)
    kernels = engine.kernel_fn(arch.to_dict(), x)
    for k in kernels.values():
        assert tuple(k.shape) == (3, 3) and bool(k.isfinite().all())


def test_omitted_parameters_take_the_neural_tangents_defaults():
    terse = stax.serial(stax.Dense(8), stax.Erf(), stax.Dense(1))
    spelled = stax.serial(stax.Dense(8, w_std=1.0, b_std=None), stax.Erf(a=1.0, b=1.0, c=0.0), stax.Dense(1),
                          parameterization="ntk")
    a, b = engine.kernel_fn(terse.to_dict(), VECTORS), engine.kernel_fn(spelled.to_dict(), VECTORS)
    for name in a:
        assert bool((a[name] == b[name]).all())


def test_avgpool_strides_default_to_one_as_documented():
    def ntk(*pool_args, **pool_kwargs):
        arch = stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.AvgPool(*pool_args, **pool_kwargs),
                           stax.Flatten(), stax.Dense(1))
        return engine.kernel_fn(arch.to_dict(), IMAGES, get=("ntk",))["ntk"]

    terse = ntk((2, 2))
    assert bool((terse == ntk((2, 2), strides=(1, 1))).all())
    assert not bool((terse == ntk((2, 2), strides=(2, 2))).all())


# The builder's names for a spec field, where they differ: Residual(*branch) fills "layers".
BUILDER_NAMES = {("Residual", "layers"): "branch"}


def test_every_registered_layer_type_has_a_builder_with_its_fields_and_defaults():
    """The SDK cannot import the server, so its builders are written by hand: this keeps them in
    step with the spec registry (ntk.spec.architecture), field for field and default for default."""
    import inspect

    from ntk.spec.architecture import LAYER_TYPES

    for name, model in LAYER_TYPES.items():
        builder = getattr(stax, name, None)
        assert builder is not None, f"ntk_client.stax has no builder for {name}"
        params = inspect.signature(builder).parameters
        for field, info in model.model_fields.items():
            if field == "type":
                continue
            param = params[BUILDER_NAMES.get((name, field), field)]
            if isinstance(param.default, stax._Default):
                assert stax._jsonable(param.default.value) == info.default, (name, field)
        assert len(params) == len(model.model_fields) - 1, (name, sorted(params))


def test_the_neural_tangents_bridge_translates_every_registered_layer_type():
    from pathlib import Path

    from ntk.spec.architecture import LAYER_TYPES

    bridge = (Path(__file__).parents[2] / "bench" / "nt_bridge.py").read_text()
    assert [name for name in LAYER_TYPES if f'"{name}"' not in bridge] == []
