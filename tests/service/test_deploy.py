"""Deployment files: docker-compose.yml against the compose-spec schema, and the image's install
steps (docker/install.sh) run for real into a scratch virtualenv. No Docker engine is needed."""

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
    venv = tmp_path / "venv"
    # the machine's packages stand in for the index (no network here); the script's steps run as in the image
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    env = {**os.environ, "PYTHON": str(venv / "bin" / "python"),
           "PIP_FLAGS": "--no-index --no-build-isolation --no-deps --quiet"}
    subprocess.run([str(ROOT / "docker" / "install.sh"), "cpu"], cwd=tmp_path, env=env, check=True, timeout=300)
    help_text = subprocess.run([str(venv / "bin" / "ntk"), "--help"], cwd=tmp_path, capture_output=True,
                               text=True, check=True).stdout
    assert "serve" in help_text and "worker" in help_text
