"""The user's documentation lives in the repository: its generated tables match the code, every
layer type has an entry in tests/every_layer.py, and nothing points outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from every_layer import ARCHITECTURES, inputs
from ntk.engine import kernel_fn
from ntk.spec.architecture import LAYER_TYPES

ROOT = Path(__file__).resolve().parent.parent


def test_generated_tables_are_current():
    proc = subprocess.run([sys.executable, "docs/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_layer_type_is_covered():
    types = set(LAYER_TYPES)
    covered = {layer["type"] for arch, _ in ARCHITECTURES.values() for layer in _walk(arch["layers"])}
    assert types <= covered, f"tests/every_layer.py lacks {sorted(types - covered)}"


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_layer_architecture_computes(name):
    arch, shape = ARCHITECTURES[name]
    assert all(np.isfinite(np.asarray(k)).all() for k in kernel_fn(arch, inputs(shape)).values())


def _walk(layers: list[dict]):
    for layer in layers:
        yield layer
        yield from _walk(layer.get("layers", []) + (layer.get("shortcut") or []))


def test_nothing_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./shared|SPEC\.md|SPEC §")
    offenders = [name for name in tracked
                 if not name.startswith(("tests/", "bench/")) and Path(ROOT / name).is_file()
                 and name.endswith((".py", ".md", ".toml", ".yml", ".sh", ".json"))
                 and outside.search((ROOT / name).read_text(errors="replace"))]
    assert not offenders, f"these files cite the shared specification, which users do not have: {offenders}"


def test_markdown_links_resolve():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
