"""The spec language: what parses, what is rejected, and that every rejection names its JSON path."""

import numpy as np
import pytest
from pydantic import ValidationError

from ntk.engine import Architecture, NonFiniteKernel, SpecError, kernel_fn, validation_errors
from ntk.spec.architecture import MAX_LAYERS

DENSE = {"type": "Dense", "out_dim": 4}


def errors_of(spec, shape=None):
    try:
        Architecture.parse(spec).check(shape, max_layers=MAX_LAYERS)
    except ValidationError as e:
        return validation_errors(e)
    except SpecError as e:
        return e.errors
    return []


def test_defaults_are_filled_and_canonical_json_is_stable():
    a = Architecture.parse({"layers": [{"type": "Dense", "out_dim": 3}]})
    b = Architecture.parse('{"parameterization": "ntk", "layers": [{"w_std": 1.0, "out_dim": 3, "type": "Dense"}]}')
    assert a.canonical_json() == b.canonical_json()
    assert a.digest() == b.digest()
    assert a.layers[0].b_std is None


@pytest.mark.parametrize("spec, path", [
    ({"layers": []}, "layers"),
    ({"layers": [{"type": "Dense"}]}, "layers[0].out_dim"),
    ({"layers": [{"type": "Dense", "out_dim": 3, "w_std": "big"}]}, "layers[0].w_std"),
    ({"layers": [{"type": "Dense", "out_dim": 3, "w_std": -1}]}, "layers[0].w_std"),
    ({"layers": [{"type": "Dense", "out_dim": 3, "w_std": 1e9}]}, "layers[0].w_std"),
    ({"layers": [{"type": "Dense", "out_dim": 3, "colour": 1}]}, "layers[0].colour"),
    ({"layers": [DENSE, {"type": "Softmax"}]}, "layers[1]"),
    ({"layers": [DENSE, {"type": "Conv", "out_chan": 2, "filter_shape": [3], "padding": "FULL"}]}, "layers[1].padding"),
    ({"layers": [DENSE, {"type": "Residual", "layers": [{"type": "Dense", "out_dim": 0}]}]}, "layers[1].layers[0].out_dim"),
    ({"parameterization": "mup", "layers": [DENSE]}, "parameterization"),
])
def test_field_errors_name_the_path(spec, path):
    paths = [e["path"] for e in errors_of(spec)]
    assert path in paths, paths


def test_non_finite_numbers_are_rejected():
    assert errors_of({"layers": [{"type": "Dense", "out_dim": 3, "b_std": float("nan")}]})[0]["path"] == "layers[0].b_std"
    assert errors_of({"layers": [{"type": "Erf", "a": float("inf")}]})[0]["path"] == "layers[0].a"


@pytest.mark.parametrize("spec, shape, path, words", [
    ({"layers": [{"type": "Relu"}, DENSE]}, (3,), "layers[0]", "Gaussian"),
    ({"layers": [DENSE, {"type": "Relu"}, {"type": "Erf"}]}, (3,), "layers[2]", "Gaussian"),
    ({"layers": [DENSE, {"type": "Residual", "layers": [{"type": "Relu"}]}, {"type": "Relu"}]}, (3,), "layers[2]", "Gaussian"),
    ({"layers": [{"type": "Conv", "out_chan": 2, "filter_shape": [3, 3]}, DENSE]}, (5, 5, 2), "layers", "Flatten"),
    ({"layers": [{"type": "Conv", "out_chan": 2, "filter_shape": [3, 3]}, {"type": "Flatten"}, DENSE]}, (3,), "layers[0]", "spatial"),
    ({"layers": [{"type": "Conv", "out_chan": 2, "filter_shape": [3]}, {"type": "Flatten"}, DENSE]}, (5, 5, 2), "layers[0].filter_shape", "spatial axes"),
    ({"layers": [{"type": "Conv", "out_chan": 2, "filter_shape": [9, 9]}, {"type": "Flatten"}, DENSE]}, (5, 5, 2), "layers[0].filter_shape", "larger"),
    ({"layers": [DENSE, {"type": "Residual", "layers": [{"type": "Dense", "out_dim": 5}]}]}, (3,), "layers[1]", "match"),
    ({"layers": [DENSE, {"type": "LayerNorm", "axis": [0, 1]}]}, (3,), "layers[1].axis", "axis"),
    ({"layers": [DENSE, {"type": "LayerNorm", "axis": [1]}, DENSE]}, (5, 5, 2), "layers[1].axis", "channel"),
])
def test_stack_errors_name_the_layer(spec, shape, path, words):
    errors = errors_of(spec, shape)
    assert errors and errors[0]["path"] == path, errors
    assert words in errors[0]["message"]


def test_residual_nesting_and_depth_limits():
    spec = {"type": "Residual", "layers": [DENSE]}
    for _ in range(12):
        spec = {"type": "Residual", "layers": [spec]}
    errors = errors_of({"layers": [DENSE, spec]}, (3,))
    assert "nest" in errors[0]["message"]
    assert not errors_of({"layers": [DENSE] * 300})  # NTK_MAX_LAYERS: 1024 by default
    assert errors_of({"layers": [DENSE] * 1025})[0]["path"] == "layers"


def test_mismatched_inputs_are_rejected():
    with pytest.raises(SpecError, match="x2"):
        kernel_fn({"layers": [DENSE]}, np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(SpecError, match="x1"):
        kernel_fn({"layers": [DENSE]}, np.ones(3))


def test_overflow_is_an_error_not_nan():
    layers = []
    for _ in range(60):
        layers += [{"type": "Dense", "out_dim": 8, "w_std": 900.0}, {"type": "Relu"}]
    with pytest.raises(NonFiniteKernel, match="overflow"):
        kernel_fn({"layers": layers + [DENSE]}, np.ones((2, 3)))


@pytest.mark.parametrize("layer, unknown, known", [
    ({**DENSE, "W_std": 1.5}, "W_std", "w_std"),  # neural-tangents' own spelling
    ({**DENSE, "B_STD": 0.1}, "B_STD", "b_std"),
    ({"type": "Dense", "outDim": 4}, "outDim", "out_dim"),
    ({"type": "Conv", "out_chan": 2, "filter-shape": [3]}, "filter-shape", "filter_shape"),
])
def test_a_known_parameter_in_another_spelling_is_suggested(layer, unknown, known):
    errors = {e["path"]: e for e in errors_of({"layers": [DENSE, {"type": "Residual", "layers": [layer]}]})}
    assert errors[f"layers[1].layers[0].{unknown}"]["suggestion"] == known


def test_an_unknown_parameter_like_no_known_one_gets_no_suggestion():
    errors = errors_of({"layers": [{**DENSE, "colour": 1}]})
    assert errors[0]["path"] == "layers[0].colour" and "suggestion" not in errors[0]


@pytest.mark.parametrize("spec, shape, parameters", [
    # fan-in × fan-out per Dense (biases only where b_std is set), acting on the channel axis
    ({"layers": [{"type": "Dense", "out_dim": 5}, {"type": "Relu"}, {"type": "Dense", "out_dim": 1, "b_std": 0.1}]},
     (3,), 3 * 5 + 5 * 1 + 1),
    # Conv: in_chan × filter taps × out_chan
    ({"layers": [{"type": "Conv", "out_chan": 4, "filter_shape": [3, 2], "b_std": 0.1}, {"type": "Flatten"},
                 {"type": "Dense", "out_dim": 2}]}, (5, 5, 2), 2 * 6 * 4 + 4 + (3 * 4 * 4) * 2),
    # both paths of a Residual block
    ({"layers": [DENSE, {"type": "Residual", "layers": [{"type": "Dense", "out_dim": 4}],
                          "shortcut": [{"type": "Dense", "out_dim": 4}]}]}, (3,), 3 * 4 + 16 + 16),
    ({"layers": [{"type": "Dense", "out_dim": 2**20}, {"type": "Relu"}, {"type": "Dense", "out_dim": 2**20},
                 {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]}, (3,), 3 * 2**20 + 2**40 + 2**20),
])
def test_parameters_of_the_sampled_networks(spec, shape, parameters):
    assert Architecture.parse(spec).parameters(shape) == parameters
