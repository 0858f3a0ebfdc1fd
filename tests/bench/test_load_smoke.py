"""Smoke test of bench/load.py: each scenario runs for a moment against the session service and
the table reports requests and no errors (the figures themselves are the script's business)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Not importorskip: importing locust monkey-patches this process for gevent.
@pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is a bench extra: pip install -e '.[bench]'")
def test_load_script_reports_every_scenario_without_errors(service_url):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--host", service_url, "--seconds", "2",
                           "--users", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line[:14].strip() + " " + line[14:44].strip(): line.split() for line in proc.stdout.splitlines()[1:]}
    for name in ("CachedKernel POST /v1/kernels (cached)", "JsonUpload POST /v1/datasets (json)",
                 "NpzUpload POST /v1/datasets (npz)"):
        assert int(rows[name][-5]) > 0 and rows[name][-1] == "0", proc.stdout
