"""Smoke tests of the experiment scripts bench/ensemble.py, bench/digits.py, bench/diabetes.py,
bench/chunk_throughput.py, bench/predict_scaling.py, bench/sweep.py and bench/cost_accuracy.py,
and of examples/sweep_digits.py.

Each runs end to end at a toy size (our engine only: NT_PYTHON unset) and prints its table; the
figures themselves are the scripts' business, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, folder: str = "bench") -> str:
    env = {k: v for k, v in os.environ.items() if k != "NT_PYTHON"}
    env["NTK_DEVICE"] = env.get("NTK_DEVICE", "cpu")
    proc = subprocess.run([sys.executable, str(ROOT / folder / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_ensemble_script_writes_its_table_and_figure(tmp_path):
    figure = tmp_path / "ensemble.png"
    out = run_script("ensemble.py", "--members", "4", "--widths", "4", "--out", str(figure))
    assert "max|z| mean" in out and "all times: max |z|" in out
    assert figure.stat().st_size > 10_000


def test_digits_script_reports_accuracy():
    out = run_script("digits.py", "--train", "200", "--depth", "1", "--reps", "1")
    assert "NT_PYTHON is not set" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("ntk ", "nngp "))]
    assert {r[0] for r in rows} == {"ntk", "nngp"}
    assert all(float(r[2]) > 0.8 for r in rows)


def test_diabetes_script_reports_coverage():
    out = run_script("diabetes.py", "--train", "100", "--depth", "1")
    rows = [line for line in out.splitlines() if line.startswith(("NNGP posterior", "NTK ensemble"))]
    assert len(rows) == 2
    for row in rows:
        coverage = [float(v) for v in row.split()[-4:]]
        assert all(0.0 <= c <= 1.0 for c in coverage)


def test_depth_and_quadrature_script_prints_both_tables():
    out = run_script("depth_and_quadrature.py", "--points", "4", "--depths", "2", "600", "--degrees", "8",
                     "--repeat", "1")
    assert "µs/entry/layer" in out and "degree" in out
    assert len([line for line in out.splitlines() if line.split()[:1] == ["4"]]) == 3


def test_chunk_throughput_script_reports_rates():
    out = run_script("chunk_throughput.py", "--gb", "0.02", "--chunk-mb", "1")
    assert "write MB/s" in out and len(out.splitlines()) == 3


def test_predict_scaling_script_times_its_phases_and_agrees_with_a_direct_solve(tmp_path):
    records = tmp_path / "scaling.json"
    out = run_script("predict_scaling.py", "--sizes", "300,600", "--test", "20", "--json", str(records),
                     "--figure", str(tmp_path / "scaling.png"))
    assert "factor" in out and (tmp_path / "scaling.png").exists()
    for record in json.loads(records.read_text())["records"]:
        assert record["max_rel_diff"] < 1e-8 and record["factorize"] >= 0


def test_sweep_script_prints_both_ratios():
    out = run_script("sweep.py", "--points", "20", "--max-depth", "4", "--reps", "1")
    assert "x kernel_fn per architecture" in out and "x the deepest alone" in out


def test_sweep_digits_example_writes_its_figure(tmp_path):
    figure = tmp_path / "sweep.png"
    out = run_script("sweep_digits.py", "--train", "100", "--val", "50", "--depths", "2", "--out", str(figure),
                     folder="examples")
    assert "best marginal likelihood: depth" in out and figure.stat().st_size > 10_000


def test_cost_accuracy_script_prints_estimate_and_actual_per_architecture():
    out = run_script("cost_accuracy.py", "--scale", "0.02", "--only", "FC", "--threads", "1")
    assert "ns/unit" in out and "ratio" in out
    rows = [line for line in out.splitlines() if line.startswith(("FC-", "FC "))]
    assert len(rows) == 6
    for row in rows:
        scale, estimate, actual, ratio = (float(v) for v in row.split()[-4:])
        assert scale > 0 and estimate > 0 and actual > 0 and ratio > 0
