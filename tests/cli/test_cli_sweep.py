"""``ntk sweep``'s mistakes: each is one line naming what to fix, exit 1 (2 for the command line).
(What it computes, locally and with --url: tests/service/test_sweeps.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import assert_one_clean_line, ntk

BASE = {"block": [{"type": "Dense", "out_dim": 8}, {"type": "Relu"}], "readout": [{"type": "Dense", "out_dim": 1}]}


@pytest.fixture
def inputs(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.savez(tmp_path / "train.npz", x=x, y=x[:, 0])
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "base.json").write_text(json.dumps(BASE))
    return tmp_path


@pytest.mark.parametrize("more, status, names", [
    (["--grid", "nonsense=1,2"], 1, ["grid.nonsense", "no layer"]),
    (["--grid", "depth=5..1"], 2, ["--grid", "empty"]),
    (["--grid", "depth"], 2, ["--grid", "key=values"]),
    (["--grid", "depth=1..3", "--grid", "depth=4"], 2, ["twice", "depth"]),
    (["--grid", "depth=0..40", "--grid", "w_std=" + ",".join(str(1 + i / 100) for i in range(30))], 1,
     ["NTK_MAX_SWEEP_ARCHITECTURES"]),
    (["--diag-reg", "-1"], 2, ["--diag-reg", "fit or a number"]),
    (["--architectures", "base.json"], 2, ["--base", "--architectures"]),
    (["--val", "x.npy"], 2, ["--val", "x.npy", ".npz"]),
])
def test_a_mistake_is_one_line(inputs, capsys, more, status, names):
    more = [str(inputs / arg) if arg in ("base.json", "x.npy") else arg for arg in more]
    got, err = ntk(capsys, "sweep", "--train", inputs / "train.npz", "--base", inputs / "base.json",
                   "--out", inputs / "rows.csv", *more)
    assert got == status
    assert_one_clean_line(err, *names)
    assert not (inputs / "rows.csv").exists()


def test_an_error_row_is_counted_not_fatal(inputs, capsys):
    """An architecture whose kernel overflows has an error and no numbers; the others have theirs.
    (w_std 1000 over 8 ReLU layers: a variance of about (10⁶/2)⁸ ≈ 4·10⁴⁵, beyond float32.)"""
    got, _ = ntk(capsys, "sweep", "--train", inputs / "train.npz", "--base", inputs / "base.json",
                 "--grid", "depth=8", "--grid", "w_std=1.0,1000", "--dtype", "float32", "--diag-reg", "0.01",
                 "--out", inputs / "rows.csv")
    assert got == 0
    lines = (inputs / "rows.csv").read_text().splitlines()
    assert lines[0].startswith("depth,w_std,log_marginal_likelihood") and len(lines) == 3
    assert lines[1].endswith(",") and "overflowed" in lines[2]
