"""``ntk kernel`` and ``ntk predict`` computing locally: the .npz holds what the engine computes."""

import json

import numpy as np
import torch

from cli.main import main
from workers.engine import kernel_fn
from workers.engine.predict import predict_from_spec

SPEC = {"layers": [{"type": "Dense", "out_dim": 64, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                   {"type": "Dense", "out_dim": 1, "w_std": 1.5, "b_std": 0.05}]}


def write_inputs(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "arch.json").write_text(json.dumps(SPEC))
    x, x_test = rng.normal(size=(12, 3)), rng.normal(size=(4, 3))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x_test.npy", x_test)
    np.savez(tmp_path / "train.npz", x=x, y=rng.normal(size=(12, 2)))
    return x, x_test


def test_kernel_command_writes_the_engine_kernels(tmp_path):
    x, x_test = write_inputs(tmp_path)
    out = tmp_path / "k.npz"
    assert main(["kernel", "--arch", str(tmp_path / "arch.json"), "--x1", str(tmp_path / "x.npy"),
                 "--x2", str(tmp_path / "x_test.npy"), "--out", str(out)]) == 0
    saved = np.load(out)
    expected = kernel_fn(SPEC, x, x_test)
    for name in ("nngp", "ntk"):
        np.testing.assert_array_equal(saved[name], expected[name].numpy())


def test_kernel_command_get_and_float32(tmp_path):
    write_inputs(tmp_path)
    out = tmp_path / "k.npz"
    main(["kernel", "--arch", str(tmp_path / "arch.json"), "--x1", str(tmp_path / "x.npy"),
          "--get", "ntk", "--dtype", "float32", "--out", str(out)])
    saved = np.load(out)
    assert saved.files == ["ntk"] and saved["ntk"].dtype == np.float32


def test_predict_command_matches_predict_from_spec(tmp_path):
    x, x_test = write_inputs(tmp_path)
    y = np.load(tmp_path / "train.npz")["y"]
    out = tmp_path / "p.npz"
    assert main(["predict", "--arch", str(tmp_path / "arch.json"), "--train", str(tmp_path / "train.npz"),
                 "--test", str(tmp_path / "x_test.npy"), "--t", "1,inf", "--diag-reg", "1e-4",
                 "--out", str(out)]) == 0
    saved = np.load(out)
    expected = predict_from_spec(SPEC, x, y, x_test, t=[1.0, float("inf")], diag_reg=1e-4)
    np.testing.assert_allclose(saved["mean"], expected.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(saved["covariance"], expected.covariance.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(saved["t"], [1.0, np.inf])
    assert saved["max_learning_rate"] > 0
