"""Sweeps: the grid's architectures, their kernels computed together, and the rows' numbers.

References are independent of the sweep's code: each architecture's kernels from ``kernel_fn`` on
that architecture alone, the marginal likelihood from scipy's multivariate normal density, the
t = ∞ predictions from numpy's dense solve.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from ntk.engine import kernel, kernel_fn
from ntk.engine.interrupt import Steps, Stopped
from ntk.engine.layers import LAYERS
from ntk.spec.architecture import SpecError
from ntk.engine.sweep import build_trie, layer_applications, sweep, sweep_kernels, walk
from ntk.spec.sweep_grid import SweepTooLarge, expand

FC = {"block": [{"type": "Dense", "out_dim": 64}, {"type": "Relu"}],
      "readout": [{"type": "Dense", "out_dim": 1}]}


def data(n=40, m=15, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x, x_val = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    labels, labels_val = ((z[:, 0] > 0).astype(int) + (z[:, 1] > 0) for z in (x, x_val))
    return x, np.eye(k)[labels] - 1 / k, x_val, np.eye(k)[labels_val] - 1 / k


# -- the grid -----------------------------------------------------------------------------------


def test_depth_counts_blocks_and_keys_apply_everywhere_or_to_their_part():
    points = expand(FC, {"depth": [0, 2], "w_std": [1.5], "readout.b_std": [None, 0.1]})
    assert [p.key for p in points] == [{"depth": d, "w_std": 1.5, "readout.b_std": b}
                                       for d in (0, 2) for b in (None, 0.1)]
    layers = points[-1].architecture.layers
    assert [layer.type for layer in layers] == ["Dense", "Relu", "Dense", "Relu", "Dense"]
    assert all(layer.w_std == 1.5 for layer in layers if layer.type == "Dense")
    assert [layer.b_std for layer in layers if layer.type == "Dense"] == [None, None, 0.1]
    assert [layer.type for layer in points[0].architecture.layers] == ["Dense"]


def test_activation_and_its_parameters_and_parameterization():
    points = expand(FC, {"alpha": [0.2], "activation": ["LeakyRelu", {"type": "Erf", "b": 2.0}],
                         "parameterization": ["standard"]})
    assert [p.architecture.layers[1].model_dump() for p in points] == [
        {"type": "LeakyRelu", "alpha": 0.2}, {"type": "Erf", "a": 1.0, "b": 2.0, "c": 0.0}]
    assert {p.architecture.parameterization for p in points} == {"standard"}


def test_explicit_architectures_are_keyed_by_position_or_label():
    spec = {"layers": [{"type": "Dense", "out_dim": 1}]}
    assert [p.key for p in expand(architectures=[spec, spec])] == [{"architecture": 0}, {"architecture": 1}]
    assert [p.key for p in expand(architectures={"linear": spec})] == [{"architecture": "linear"}]


@pytest.mark.parametrize("base, grid, path", [
    (FC, {"alpha": [0.1]}, "grid.alpha"),
    (FC, {"w_std": [-1.0]}, "grid"),
    (FC, {"depth": [1.5]}, "grid"),
    (FC, {"w_std": [1.0], "block.w_std": [2.0]}, "grid.block.w_std"),
    ({"layers": [{"type": "Dense", "out_dim": 1}]}, {"depth": [1]}, "grid.depth"),
])
def test_grid_errors_name_the_key(base, grid, path):
    with pytest.raises(SpecError) as error:
        expand(base, grid)
    assert error.value.errors[0]["path"] == path


def test_too_many_architectures_are_refused_with_the_limit():
    with pytest.raises(SweepTooLarge) as error:
        expand(FC, {"depth": list(range(1, 11)), "w_std": [1.0, 2.0]}, max_architectures=19)
    assert (error.value.value, error.value.limit) == (20, 19)


# -- kernels ------------------------------------------------------------------------------------


MIXED = [
    {"layers": [{"type": "Dense", "out_dim": 8, "w_std": 1.5, "b_std": 0.1}, {"type": "Erf"},
                {"type": "Dense", "out_dim": 1}]},
    {"parameterization": "standard", "layers": [{"type": "Dense", "out_dim": 8, "w_std": 1.5, "b_std": 0.1},
                                                {"type": "Erf"}, {"type": "Dense", "out_dim": 1}]},
    {"layers": [{"type": "Dense", "out_dim": 8, "w_std": 1.5, "b_std": 0.1},
                {"type": "Residual", "layers": [{"type": "Relu"}, {"type": "Dense", "out_dim": 8}]},
                {"type": "Dense", "out_dim": 1}]},
]


@pytest.mark.parametrize("block_size", [None, 16])
def test_each_architectures_kernels_equal_kernel_fn_alone(block_size):
    x, _, x_val, _ = data()
    points = expand(FC, {"depth": [1, 2, 3], "b_std": [None, 0.1]}) + expand(architectures=MIXED)
    architectures = [p.architecture for p in points]
    seen = []
    for index, kernels in sweep_kernels(architectures, x, x_val, block_size=block_size):
        alone = kernel_fn(architectures[index], x, block_size=block_size)
        alone_val = kernel_fn(architectures[index], x_val, x, block_size=block_size)
        for name in ("nngp", "ntk"):
            assert torch.equal(kernels["train_train"][name], alone[name])
            assert torch.equal(kernels["val_train"][name], alone_val[name])
        seen.append(index)
    assert sorted(seen) == list(range(len(points)))


def test_rectifier_stacks_stay_exactly_symmetric_so_the_sweep_copies_instead_of_symmetrizing():
    """A block of points against themselves stays symmetric to the bit through Dense and the
    rectifiers (KEEPS_SYMMETRY); through Erf, which gives identical points the first one's variance,
    it is not assumed to. Either way each architecture equals kernel_fn alone, identical points too."""
    x, _, _, _ = data()
    x[7] = x[3]  # identical points
    relu = [p.architecture for p in expand(FC, {"depth": [1, 3], "w_std": [1.5]})]
    erf = [p.architecture for p in expand(FC, {"depth": [2], "activation": ["Erf"]})]
    architectures = relu + erf
    points = torch.tensor(x)
    seen = {}
    for root in build_trie(architectures):
        for index, state, exact in walk(root, points, None, ("nngp", "ntk"), Steps(len(architectures))):
            seen[index] = exact
            if exact:
                assert torch.equal(state.nngp, state.nngp.T) and torch.equal(state.ntk, state.ntk.T)
    assert seen == {0: True, 1: True, 2: False}
    for index, kernels in sweep_kernels(architectures, x):
        alone = kernel_fn(architectures[index], x)
        assert all(torch.equal(kernels["train_train"][name], alone[name]) for name in ("nngp", "ntk"))


def test_an_overflow_in_some_blocks_fails_only_its_architecture():
    x, _, x_val, _ = data()
    architectures = [p.architecture for p in expand(FC, {"depth": [1, 40], "w_std": [1.0, 1000.0]})]
    results = dict(sweep_kernels(architectures, x, x_val, block_size=16))
    assert isinstance(results[3], kernel.NonFiniteKernel) and "overflowed" in str(results[3])
    for index in range(3):
        assert torch.equal(results[index]["train_train"]["ntk"], kernel_fn(architectures[index], x, block_size=16)["ntk"])


@pytest.mark.parametrize("readout, path, message", [
    ([{"type": "Relu"}, {"type": "Relu"}], "layers[2]", "Relu needs a Gaussian input"),
    ([{"type": "Conv", "out_chan": 1, "filter_shape": [2]}], "layers[1]", "Conv"),
])
def test_an_architecture_the_inputs_cannot_run_is_refused_as_check_refuses_it_before_any_work(readout, path, message):
    """The sweep checks each shared prefix once; what it raises is what Architecture.check raises."""
    x, _, _, _ = data()
    good = expand({"block": [{"type": "Dense", "out_dim": 8}], "readout": [{"type": "Dense", "out_dim": 1}]},
                  {"depth": [1, 2]})
    bad = expand({"block": [{"type": "Dense", "out_dim": 8}], "readout": readout}, {"depth": [1]})[0]
    with pytest.raises(SpecError) as alone:
        bad.architecture.check((x.shape[1],))
    with pytest.raises(SpecError) as swept:
        next(sweep_kernels([p.architecture for p in good] + [bad.architecture], x))
    assert str(swept.value) == str(alone.value) and str(alone.value).startswith(path) and message in str(alone.value)


def test_images_with_pooling_share_with_each_other_not_with_dense_inputs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4, 4, 2))
    base = {"block": [{"type": "Conv", "out_chan": 8, "filter_shape": [3, 3], "padding": "SAME"}, {"type": "Relu"}],
            "readout": [{"type": "GlobalAvgPool"}, {"type": "Dense", "out_dim": 1}]}
    architectures = [p.architecture for p in expand(base, {"depth": [1, 2]})]
    for index, kernels in sweep_kernels(architectures, x):
        alone = kernel_fn(architectures[index], x)
        assert all(torch.equal(kernels["train_train"][name], alone[name]) for name in ("nngp", "ntk"))


def test_a_depth_grid_applies_each_shared_layer_once(monkeypatch):
    """Depths 1…D: D blocks (Dense + Relu) and D readouts (Dense) per block of points, and the input
    Gram once per block, instead of D(D+1)/2 blocks."""
    calls = Counter()
    for name in ("Dense", "Relu"):
        monkeypatch.setitem(LAYERS, name, _counted(calls, name, LAYERS[name]))
    monkeypatch.setattr(kernel, "input_kernel", _counted(calls, "input", kernel.input_kernel))
    x, y, _, _ = data()
    depth = 7
    points = expand(FC, {"depth": list(range(1, depth + 1))})
    sweep(points, x, y, diag_reg=1e-3)
    assert calls == {"Dense": depth + depth, "Relu": depth, "input": 1}
    assert layer_applications([p.architecture for p in points]) == 3 * depth

    calls.clear()  # three blocks of points (two diagonal, one off): each block walks the trie once
    list(sweep_kernels([p.architecture for p in expand(FC, {"depth": list(range(1, depth + 1))})], x,
                       block_size=20))
    assert calls == {"Dense": 3 * 2 * depth, "Relu": 3 * depth, "input": 3}


def _counted(calls: Counter, name: str, fn):
    def counted(*args, **kwargs):
        calls[name] += 1
        return fn(*args, **kwargs)
    return counted


# -- rows ---------------------------------------------------------------------------------------


def direct_log_likelihood(k: np.ndarray, y: np.ndarray, relative: float, scale_factor: float = 1.0) -> float:
    """Σ over outputs of log N(y_j | 0, σ²(K + εI)), σ² = tr(YᵀA⁻¹Y)/(nk) (times ``scale_factor``)."""
    a = k + relative * np.mean(np.diag(k)) * np.eye(len(k))
    scale = np.trace(y.T @ np.linalg.solve(a, y)) / y.size * scale_factor
    return sum(multivariate_normal(np.zeros(len(k)), scale * a).logpdf(y[:, j]) for j in range(y.shape[1]))


@pytest.mark.parametrize("diag_reg", [1e-3, "fit"])
def test_marginal_likelihoods_equal_a_direct_computation(diag_reg):
    x, y, x_val, y_val = data()
    points = expand(FC, {"depth": [1, 3], "w_std": [1.0, 2.0], "b_std": [0.0, 0.3]})
    rows = sweep(points, x, y, x_val, y_val, diag_reg=diag_reg)
    for point, row in zip(points, rows):
        k = kernel_fn(point.architecture, x, get=("nngp",))["nngp"].numpy()
        direct = direct_log_likelihood(k, y, row["diag_reg"])
        assert row["log_marginal_likelihood"] == pytest.approx(direct, rel=1e-10, abs=1e-10)
        # σ̂² is the maximum over the scale, and a fitted ε a maximum over ε.
        assert direct > max(direct_log_likelihood(k, y, row["diag_reg"], f) for f in (0.99, 1.01))
        if diag_reg == "fit":
            assert direct >= max(direct_log_likelihood(k, y, row["diag_reg"] * f) for f in (0.98, 1.02))
        else:
            assert row["diag_reg"] == diag_reg


def test_validation_metrics_equal_dense_solves():
    x, y, x_val, y_val = data()
    point = expand(FC, {"depth": [2], "b_std": [0.2]})[0]
    row = sweep([point], x, y, x_val, y_val, diag_reg=1e-2)[0]
    train = {k: v.numpy() for k, v in kernel_fn(point.architecture, x).items()}
    cross = {k: v.numpy() for k, v in kernel_fn(point.architecture, x_val, x).items()}
    for mode in ("nngp", "ntk"):
        a = train[mode] + 1e-2 * np.mean(np.diag(train[mode])) * np.eye(len(x))
        mean = cross[mode] @ np.linalg.solve(a, y)
        assert row[f"{mode}_mse"] == pytest.approx(np.mean((mean - y_val) ** 2), rel=1e-10)
        assert row[f"{mode}_accuracy"] == np.mean(mean.argmax(1) == y_val.argmax(1))


def test_rows_keep_the_order_and_keys_and_one_overflow_fails_only_its_row():
    x, y, x_val, y_val = data()
    points = expand(FC, {"depth": [1, 40], "w_std": [1.0, 1000.0]})
    told = []
    rows = sweep(points, x, y[:, :1], x_val, y_val[:, :1], diag_reg=1e-3, progress=lambda *a: told.append(a))
    assert [list(row) for row in rows] == [["depth", "w_std", "log_marginal_likelihood", "output_scale", "diag_reg",
                                            "nngp_mse", "ntk_mse", "error"]] * 4
    assert [(row["depth"], row["w_std"]) for row in rows] == [(1, 1.0), (1, 1000.0), (40, 1.0), (40, 1000.0)]
    assert [row["error"] is None for row in rows] == [True, True, True, False]
    assert "overflowed" in rows[3]["error"] and rows[3]["log_marginal_likelihood"] is None
    assert told == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_should_stop_stops_between_layers():
    x, y, _, _ = data()
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 5

    with pytest.raises(Stopped):
        sweep(expand(FC, {"depth": [1, 2, 3]}), x, y, should_stop=should_stop)
    assert len(asked) == 6
