"""Smoke test of the benchmark harness: it runs end to end at --size small (ours only).

No timing asserts: CI machines are too noisy. neural-tangents is not needed (NT_PYTHON unset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_harness_small_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "NT_PYTHON"}
    env["NTK_DEVICE"] = env.get("NTK_DEVICE", "cpu")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "harness.py"), "--size", "small", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NT_PYTHON is not set" in proc.stdout
    data = json.loads(out.read_text())
    assert data["meta"]["size"] == "small"
    names = {c["name"] for c in data["cases"]}
    assert {"fc5-f64", "cnn-gap", "cnn-flatten", "predict-1t", "predict-10t"} <= names
    for case in data["cases"]:
        assert not case["errors"], case
        assert case["ours"]["first_s"] > 0
        assert case["nt"] is None


def test_harness_api_case_against_a_running_service(tmp_path, service_url):
    """The cached-answer case: computed once through the service, then fetched as npz; MB/s reported."""
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "NT_PYTHON"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "harness.py"), "--size", "small", "--cases", "api-cached",
         "--url", service_url, "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (case,) = json.loads(out.read_text())["cases"]
    assert not case["errors"], case
    assert case["mb_per_s"] > 0 and case["ours"]["compute_s"] > 0
    assert "cached answer served at" in proc.stdout
