"""The line protocol between bench/harness.py and its two workers (stdlib only).

The harness starts one worker per engine per case and sends it one JSON object per line on
stdin; the worker answers one JSON object per line on a private copy of stdout (anything the
engine or JAX prints goes to stderr instead, so it can never corrupt the answers).

    {"op": "setup", "case": {...}}   -> {"ok": true, "rss_mb": ...}
    {"op": "run", "save": path|null} -> {"ok": true, "first_s": s, "steady_s": [s, ...], ...}
    {"op": "peak"}                   -> {"ok": true, "peak_rss_mb": ..., "peak_device_mb": ...}
    {"op": "quit"}                   -> (exits)

Errors answer {"ok": false, "error": "..."} and the worker keeps serving.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback


def rss_mb() -> float:
    """Current resident set size of this process, MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(handlers: dict) -> None:
    """Answer requests until 'quit' or EOF. ``handlers[op](request) -> dict``."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # stray prints go to stderr
    sys.stdout = sys.stderr
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "quit":
                break
            answer = {"ok": True, **handlers[req["op"]](req)}
        except Exception as e:  # noqa: BLE001 - reported to the harness, which decides
            traceback.print_exc(file=sys.stderr)
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
        out.write(json.dumps(answer) + "\n")
    out.flush()
