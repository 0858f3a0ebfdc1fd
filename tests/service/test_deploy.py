"""Deployment files: docker-compose.yml against the compose-spec schema, and the image's install
steps (docker/install.sh) run for real into a fresh virtualenv. No Docker engine is needed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from every_layer import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


def test_compose_file_follows_the_compose_spec(compose):
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.validate(compose, schema)


def test_compose_services(compose):
    services = compose["services"]
    assert {"redis", "api", "worker", "worker-cpu"} <= set(services)
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy volatile-lru" in redis_command
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and "gpu" in services["worker"]["profiles"]
    assert "cpu" in services["worker-cpu"]["profiles"] and "deploy" not in services["worker-cpu"]
    for worker in ("worker", "worker-cpu"):
        assert seconds(services[worker]["stop_grace_period"]) >= 60  # at least a tile
        assert services[worker]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[worker]["environment"]["NTK_REDIS_URL"].startswith("redis://redis:")


def test_dockerfile_runs_the_install_script():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN docker/install\.sh", dockerfile, re.MULTILINE)


def test_install_script_installs_a_working_ntk(tmp_path):
    """docker/install.sh, run as the image runs it, into a fresh virtualenv that sees none of this
    interpreter's packages: every dependency comes from the lock, and the result computes a kernel
    with every layer type and imports the SDK. Only torch's index differs: the one configured
    here (the CPU build lies on disk) stands in for download.pytorch.org."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {**os.environ, "PYTHON": str(python), "TORCH_INDEX_URL": "", "PIP_FLAGS": "--quiet"}
    subprocess.run([str(ROOT / "docker" / "install.sh"), "cpu"], cwd=tmp_path, env=env, check=True, timeout=900)
    help_text = subprocess.run([str(venv / "bin" / "ntk"), "--help"], cwd=tmp_path, capture_output=True,
                               text=True, check=True).stdout
    assert "serve" in help_text and "worker" in help_text
    # from tmp_path, so that the installed packages are imported, not this checkout's
    script = (
        "import numpy as np, ntk_client, ntk.engine as engine; from every_layer import ARCHITECTURES, inputs\n"
        "for name, (arch, shape) in ARCHITECTURES.items():\n"
        "    k = engine.kernel_fn(arch, inputs(shape))\n"
        "    assert all(np.isfinite(np.asarray(v)).all() for v in k.values()), name\n"
        "print(len(ARCHITECTURES))\n")
    computed = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "tests")}, timeout=300)
    assert computed.returncode == 0, computed.stderr
    assert int(computed.stdout) == len(ARCHITECTURES)
