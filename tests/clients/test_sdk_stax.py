"""The stax builder produces exactly the architecture JSON (docs/architecture.md) one would write by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ntk_client import stax

# (built with the SDK, the JSON written by hand): every layer, with and without its parameters.
CASES = [
    (stax.Dense(512), {"type": "Dense", "out_dim": 512}),
    (stax.Dense(512, w_std=1.5, b_std=0.05), {"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}),
    (stax.Dense(8, b_std=None), {"type": "Dense", "out_dim": 8, "b_std": None}),
    (stax.Conv(32, (3, 3)), {"type": "Conv", "out_chan": 32, "filter_shape": [3, 3]}),
    (stax.Conv(16, (3,), strides=(2,), padding="SAME", w_std=2.0, b_std=0.1),
     {"type": "Conv", "out_chan": 16, "filter_shape": [3], "strides": [2], "padding": "SAME",
      "w_std": 2.0, "b_std": 0.1}),
    (stax.Conv(4, 5, padding="CIRCULAR"), {"type": "Conv", "out_chan": 4, "filter_shape": [5], "padding": "CIRCULAR"}),
    (stax.Relu(), {"type": "Relu"}),
    (stax.LeakyRelu(0.1), {"type": "LeakyRelu", "alpha": 0.1}),
    (stax.ABRelu(-0.5, 2.0), {"type": "ABRelu", "a": -0.5, "b": 2.0}),
    (stax.Abs(), {"type": "Abs"}),
    (stax.Sign(), {"type": "Sign"}),
    (stax.Identity(), {"type": "Identity"}),
    (stax.Erf(), {"type": "Erf"}),
    (stax.Erf(a=2.0, b=0.5, c=0.1), {"type": "Erf", "a": 2.0, "b": 0.5, "c": 0.1}),
    (stax.Gelu(), {"type": "Gelu"}),
    (stax.Gelu(approximate=True), {"type": "Gelu", "approximate": True}),
    (stax.Sin(), {"type": "Sin"}),
    (stax.Sin(a=1.0, b=3.0, c=0.5), {"type": "Sin", "a": 1.0, "b": 3.0, "c": 0.5}),
    (stax.Elementwise("tanh"), {"type": "Elementwise", "fn": "tanh"}),
    (stax.Elementwise("softplus", degree=32), {"type": "Elementwise", "fn": "softplus", "degree": 32}),
    (stax.AvgPool((2, 2)), {"type": "AvgPool", "window_shape": [2, 2]}),
    (stax.AvgPool((2, 2), strides=(1, 1), padding="SAME"),
     {"type": "AvgPool", "window_shape": [2, 2], "strides": [1, 1], "padding": "SAME"}),
    (stax.GlobalAvgPool(), {"type": "GlobalAvgPool"}),
    (stax.Flatten(), {"type": "Flatten"}),
    (stax.LayerNorm(), {"type": "LayerNorm"}),
    (stax.LayerNorm(axis=(1, 2, 3)), {"type": "LayerNorm", "axis": [1, 2, 3]}),
    (stax.LayerNorm(axis=-1), {"type": "LayerNorm", "axis": [-1]}),
    (stax.Residual(stax.Relu(), stax.Dense(64)),
     {"type": "Residual", "layers": [{"type": "Relu"}, {"type": "Dense", "out_dim": 64}]}),
    (stax.Residual(stax.Relu(), stax.Conv(8, (3, 3), padding="SAME"), shortcut=stax.Conv(8, (1, 1))),
     {"type": "Residual", "layers": [{"type": "Relu"}, {"type": "Conv", "out_chan": 8, "filter_shape": [3, 3],
                                                          "padding": "SAME"}],
      "shortcut": [{"type": "Conv", "out_chan": 8, "filter_shape": [1, 1]}]}),
]


@pytest.mark.parametrize("layer, expected", CASES, ids=[repr(layer) for layer, _ in CASES])
def test_layer_json_matches_hand_written_spec(layer, expected):
    assert layer.to_dict() == expected
    assert json.loads(json.dumps(layer.to_dict())) == expected  # plain JSON types only


def test_every_spec_layer_type_has_a_builder():
    spec_types = {"Dense", "Conv", "Relu", "LeakyRelu", "ABRelu", "Abs", "Sign", "Identity", "Erf", "Gelu",
                  "Sin", "Elementwise", "AvgPool", "GlobalAvgPool", "Flatten", "LayerNorm", "Residual"}
    assert {layer.to_dict()["type"] for layer, _ in CASES} == spec_types


def test_serial_is_the_spec_example():
    arch = stax.serial(stax.Dense(512, w_std=1.5, b_std=0.05), stax.Relu(), stax.Dense(1, w_std=1.5, b_std=0.05),
                       parameterization="ntk")
    assert arch.to_dict() == {
        "parameterization": "ntk",
        "layers": [{"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05},
                   {"type": "Relu"},
                   {"type": "Dense", "out_dim": 1, "w_std": 1.5, "b_std": 0.05}],
    }
    assert json.loads(arch.to_json()) == arch.to_dict()


def test_serial_leaves_the_default_parameterization_to_the_server():
    assert stax.serial(stax.Dense(1)).to_dict() == {"layers": [{"type": "Dense", "out_dim": 1}]}
    assert stax.serial(stax.Dense(1), parameterization="standard").to_dict()["parameterization"] == "standard"


def test_nested_serials_flatten_as_in_neural_tangents():
    block = stax.serial(stax.Dense(8), stax.Relu())
    assert stax.serial(block, block, stax.Dense(1)) == stax.serial(
        stax.Dense(8), stax.Relu(), stax.Dense(8), stax.Relu(), stax.Dense(1))
    assert stax.Residual(block).to_dict()["layers"] == block.to_dict()["layers"]
    assert stax.Residual(stax.Relu(), shortcut=[stax.Dense(2), stax.Relu()]).to_dict()["shortcut"] == [
        {"type": "Dense", "out_dim": 2}, {"type": "Relu"}]


def test_nested_residuals():
    inner = stax.Residual(stax.Relu(), stax.Dense(4))
    outer = stax.serial(stax.Dense(4), stax.Residual(inner, stax.Relu()), stax.Dense(1))
    assert outer.to_dict()["layers"][1] == {
        "type": "Residual",
        "layers": [{"type": "Residual", "layers": [{"type": "Relu"}, {"type": "Dense", "out_dim": 4}]},
                   {"type": "Relu"}],
    }


def test_numpy_scalars_and_tuples_become_plain_json():
    layer = stax.Conv(np.int64(3), (np.int32(2), 2), w_std=np.float32(1.5))
    assert layer.to_dict() == {"type": "Conv", "out_chan": 3, "filter_shape": [2, 2], "w_std": 1.5}
    assert type(layer.to_dict()["out_chan"]) is int and type(layer.to_dict()["w_std"]) is float


def test_explicit_default_values_are_sent_as_given():
    # The user wrote them, so they are sent; the server's canonical form makes it the same kernel.
    assert stax.Dense(3, w_std=1.0).to_dict() == {"type": "Dense", "out_dim": 3, "w_std": 1.0}


def test_signatures_show_the_neural_tangents_defaults():
    import inspect

    assert str(inspect.signature(stax.Dense)) == "(out_dim: 'int', w_std: 'float' = 1.0, b_std: 'float | None' = None) -> 'Layer'"
    assert "padding: 'str' = 'VALID'" in str(inspect.signature(stax.Conv))


def test_reprs_read_like_the_code():
    arch = stax.serial(stax.Dense(512, w_std=1.5), stax.Relu(), stax.Dense(1))
    assert repr(arch) == "serial(Dense(out_dim=512, w_std=1.5), Relu(), Dense(out_dim=1))"


def test_builder_rejects_what_cannot_be_a_spec():
    with pytest.raises(ValueError):
        stax.serial()
    with pytest.raises(ValueError):
        stax.Residual()
    with pytest.raises(TypeError):
        stax.serial(stax.Dense(1), "Relu")
    with pytest.raises(TypeError):
        stax.Dense(object()).to_dict()


def test_layers_compare_and_hash_by_their_json():
    assert stax.Dense(3, w_std=2.0) == stax.Dense(3, w_std=2.0)
    assert stax.Dense(3) != stax.Dense(3, w_std=1.0)
    assert len({stax.Relu(), stax.Relu(), stax.serial(stax.Relu())}) == 2


def test_avgpool_docs_say_what_the_server_does():
    """strides=None is stride 1 (neural-tangents' default, and the engine's), not the window:
    tests/clients/test_sdk_engine_accepts.py checks the engine; here the SDK's two documents."""
    readme = (Path(stax.__file__).parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `AvgPool("))
    for text in (row, stax.AvgPool.__doc__):
        assert "1 along each axis" in text and "default to the window" not in text
    assert stax.AvgPool((2, 2)).to_dict() == {"type": "AvgPool", "window_shape": [2, 2]}  # the server fills strides in
