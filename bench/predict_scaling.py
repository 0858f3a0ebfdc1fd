#!/usr/bin/env python3
"""Predictions on large training sets through the service, timed phase by phase (issue 15).

    python3 bench/predict_scaling.py [--sizes 2000,4000,8000,12000,20000] [--check-upto 12000]

For each N: a fresh ``ntk serve --workers 1`` with the default settings (embedded Valkey, tiles of
2048), N training points (d = 8) uploaded as a dataset, and ``POST /v1/predict`` of an FC-3 ReLU
network (bench.harness.fc_spec) with ``t: null``, ``compute_cov: false``, ``diag_reg: 1e-4``, on
``--test`` test points. Timed: the kernel (its tiles, computed by the worker, plus assembling the
train matrix from them), the factorization (Cholesky in place), storing it (in chunks), and the
solve; the worker's peak memory (VmHWM) next to the train matrix's 8 N² bytes. Up to
``--check-upto`` points, the mean is compared with a direct Cholesky solve in this process
(engine.kernel_fn, torch.linalg.cholesky, cholesky_solve), which must agree to 1e-8.

The figure (bench/figures/predict_scaling.png) puts each phase against N on log-log axes, with
N² and N³ lines through the largest point: tiles and assembly grow as N², the factorization as
N³ (N³/3 flops), the t = ∞ solve as N² per target column.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from harness import fc_spec  # noqa: E402

DIAG_REG = 1e-4
JOIN = re.compile(r"joined (\d+) training points, ([\d.]+) s after the job started: (.*)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``ntk serve --workers 1`` with the default settings, its log in a temporary file."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="ntk-scaling-", suffix=".log", delete=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NTK_")}
        env.update(PYTHONPATH=ROOT, NTK_LOG_FORMAT="json")
        self.proc = subprocess.Popen([sys.executable, "-m", "ntk.cli", "serve", "--port", str(self.port), "--workers", "1"],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json()["workers"] >= 1:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"ntk serve not ready:\n{self.lines()[-20:]}")

    def worker_peak_bytes(self) -> int:
        """VmHWM of the worker (``-m ntk.cli worker``), the process that joins."""
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            if child.cmdline()[-1:] == ["worker"]:
                with open(f"/proc/{child.pid}/status") as status:
                    return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
        raise RuntimeError("no worker")

    def lines(self) -> list[str]:
        with open(self.log.name) as f:
            return f.read().splitlines()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.unlink(self.log.name)


def data(n: int, m: int, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + m, d))
    y = np.sin(x.sum(axis=1, keepdims=True)) + 0.1 * rng.standard_normal((n + m, 1))
    return x[:n], y[:n], x[n:]


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def direct_mean(spec: dict, x_train, y_train, x_test) -> np.ndarray:
    """The t = ∞ NTK mean by a plain Cholesky solve: Θ_td (Θ_dd + εI)⁻¹ Y, ε = diag_reg · mean diagonal."""
    from ntk.engine import kernel_fn

    theta = kernel_fn(spec, torch.as_tensor(x_train), None, get=("ntk",))["ntk"]
    theta.diagonal().add_(DIAG_REG * float(theta.diagonal().mean()))
    factor = torch.linalg.cholesky(theta)
    del theta
    alpha = torch.cholesky_solve(torch.as_tensor(y_train), factor)
    del factor
    theta_td = kernel_fn(spec, torch.as_tensor(x_test), torch.as_tensor(x_train), get=("ntk",))["ntk"]
    return (theta_td @ alpha).numpy()


def run(n: int, m: int, check: bool) -> dict:
    spec = fc_spec(depth=3)
    x_train, y_train, x_test = data(n, m)
    serve = Serve()
    try:
        with httpx.Client(base_url=serve.url, timeout=600) as client:
            dataset = client.post("/v1/datasets", content=npz(x=x_train, y=y_train),
                                  headers={"Content-Type": "application/x-npz"})
            dataset.raise_for_status()
            ref = {"dataset": dataset.json()["id"]}
            start = time.perf_counter()
            answer = client.post("/v1/predict?wait=300", json={
                "architecture": spec, "x_train": ref, "y_train": {**ref, "field": "y"}, "x_test": x_test.tolist(),
                "t": None, "compute_cov": False, "diag_reg": DIAG_REG})
            while answer.status_code == 202:
                job = answer.json()["job"]["id"]
                answer = client.get(f"/v1/jobs/{job}/result")
                if answer.status_code == 202:
                    time.sleep(1)
            total = time.perf_counter() - start
            if answer.status_code != 200:
                raise RuntimeError(f"N = {n}: {answer.status_code} {answer.text}")
            mean = np.asarray(answer.json()["mean"])
        joined = [JOIN.search(json.loads(line)["msg"]) for line in serve.lines() if "joined" in line]
        count, tiles_s, phases = next(j.groups() for j in joined if j)
        seconds = {name: float(s) for name, s, _ in (part.rsplit(" ", 2) for part in phases.split(", "))}
        out = {"n": n, "test": m, "total_s": total, "tiles_s": float(tiles_s), **seconds,
               "worker_peak_gb": serve.worker_peak_bytes() / 1e9, "matrix_gb": 8 * n * n / 1e9}
    finally:
        serve.stop()
    if check:
        direct = direct_mean(spec, x_train, y_train, x_test)
        out["max_rel_diff"] = float(np.abs(mean - direct).max() / np.abs(direct).max())
    return out


def plot(records: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["n"] for r in records], dtype=float)
    phases = {"kernel (tiles + assembly)": [r["tiles_s"] + r["read train kernel"] for r in records],
              "factorization (Cholesky)": [r["factorize"] for r in records],
              "solve": [r["solve"] for r in records],
              "store factorization": [r["store factorization"] for r in records]}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (label, seconds), marker in zip(phases.items(), "osd^"):
        ax.loglog(n, seconds, marker=marker, label=label)
    for power, style in ((2, ":"), (3, "--")):
        anchor = phases["kernel (tiles + assembly)" if power == 2 else "factorization (Cholesky)"][-1]
        ax.loglog(n, anchor * (n / n[-1]) ** power, "k" + style, linewidth=0.8, label=f"∝ N{'²' if power == 2 else '³'}")
    ax.set_xlabel("training points N")
    ax.set_ylabel("seconds")
    ax.set_title("POST /v1/predict, FC-3 ReLU, t = ∞, one worker")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,4000,8000,12000,20000")
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--check-upto", type=int, default=12000)
    parser.add_argument("--figure", default=os.path.join(HERE, "figures", "predict_scaling.png"))
    parser.add_argument("--json", default=os.path.join(HERE, "figures", "predict_scaling.json"))
    parser.add_argument("--resume", action="store_true", help="keep the records of --json, run the other sizes")
    args = parser.parse_args()
    records = []
    if args.resume and os.path.exists(args.json):
        with open(args.json) as f:
            records = json.load(f)["records"]
    print(f"{'N':>6} {'total':>7} {'tiles':>7} {'assemble':>8} {'λmax':>6} {'factor':>7} {'store':>6} {'solve':>6} "
          f"{'peak GB':>8} {'8N² GB':>7} {'vs direct':>9}", flush=True)
    for n in (int(v) for v in args.sizes.split(",") if int(v) not in {r["n"] for r in records}):
        r = run(n, args.test, n <= args.check_upto)
        records.append(r)
        print(f"{n:>6} {r['total_s']:>7.1f} {r['tiles_s']:>7.1f} {r['read train kernel']:>8.1f} "
              f"{r['max learning rate']:>6.1f} {r['factorize']:>7.1f} {r['store factorization']:>6.1f} "
              f"{r['solve']:>6.2f} {r['worker_peak_gb']:>8.2f} {r['matrix_gb']:>7.2f} "
              f"{r.get('max_rel_diff', float('nan')):>9.1e}", flush=True)
        with open(args.json, "w") as f:
            json.dump({"load_average": os.getloadavg(), "cpus": os.cpu_count(), "records": records}, f, indent=1)
        plot(sorted(records, key=lambda r: r["n"]), args.figure)


if __name__ == "__main__":
    main()
