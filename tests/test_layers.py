"""The packages' dependency direction, cli → (api | worker) → engine → core → spec, as pyproject's
import-linter contracts state it; and what that buys: the API process never loads torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)  # lint-imports reads ./pyproject.toml
    assert lint_imports(no_cache=True) == 0


def test_the_api_app_loads_neither_torch_nor_the_engine():
    script = ("import sys\nimport ntk.api.app\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith("
              "('ntk.engine', 'ntk.worker'))))")
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
    assert loaded == "[]"
