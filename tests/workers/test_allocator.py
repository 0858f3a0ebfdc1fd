"""ntk.worker.allocator: freed memory stays in the process unless the user set glibc's own knobs."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "from ntk.worker.allocator import keep_freed_memory; print(keep_freed_memory())"


def run(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tunes_glibc_unless_the_environment_does():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert run(env) == "True"
    assert run({**env, "MALLOC_TRIM_THRESHOLD_": "0"}) == "False"
