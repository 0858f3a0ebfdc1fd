#!/usr/bin/env python3
"""Benchmark harness: our PyTorch engine against neural-tangents, in one run, on one machine.

    python3 bench/harness.py --size full --out bench.json            # ours only
    NT_PYTHON=/tmp/nt/bin/python python3 bench/harness.py --size full --out bench.json
    python3 bench/harness.py --size gpu --device cuda --out gpu.json  # see bench/gpu_check.sh

Each case runs in two fresh worker processes, ours (bench/ours_worker.py, this Python) and
neural-tangents (bench/nt_worker.py under $NT_PYTHON with jax_enable_x64; skipped with a notice
when NT_PYTHON is unset). The harness alternates them (ours, NT, NT, ours, ...) for ``reps``
repetitions and reports medians of

* ``first``: the whole computation including compilation (NT: a freshly built, jitted
  kernel_fn; ours: a plain call, nothing to compile), and
* ``steady``: further calls of the same function,

the ratio ours/NT of each, the peak memory of each worker (RSS; on CUDA also the torch peak
allocation), and the largest relative error ``max|ours - NT| / max|NT|`` of every returned array
(float64 cases must agree to 1e-6, SPEC §1). Goals from issue 7 are marked in the table.

``--size small`` shrinks everything so the whole run takes well under a minute (CI smoke test,
no timing asserts); ``full`` is issue 7's CPU sizes; ``gpu`` the H200 sizes.
``--url`` adds the "cached 2048x2048 kernel fetched as npz through the API" case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# -- architectures ----------------------------------------------------------------------------

W_STD, B_STD = 1.5, 0.05


def fc_spec(depth: int = 5, width: int = 512, outputs: int = 1) -> dict:
    """FC-<depth>: depth × (Dense + ReLU), then a Dense readout to ``outputs``."""
    layers = []
    for _ in range(depth):
        layers += [{"type": "Dense", "out_dim": width, "w_std": W_STD, "b_std": B_STD}, {"type": "Relu"}]
    layers.append({"type": "Dense", "out_dim": outputs, "w_std": W_STD, "b_std": B_STD})
    return {"parameterization": "ntk", "layers": layers}


def cnn_spec(depth: int, readout: str, channels: int = 256) -> dict:
    """depth × (Conv 3×3 SAME + ReLU), then GlobalAvgPool or Flatten, then a Dense readout."""
    layers = []
    for _ in range(depth):
        layers += [{"type": "Conv", "out_chan": channels, "filter_shape": [3, 3], "padding": "SAME",
                    "w_std": W_STD, "b_std": B_STD}, {"type": "Relu"}]
    layers += [{"type": readout}, {"type": "Dense", "out_dim": 1, "w_std": W_STD, "b_std": B_STD}]
    return {"parameterization": "ntk", "layers": layers}


# -- cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    kind: str                      # "kernel" | "predict" | "api"
    spec: dict
    n: int                         # points (train points for predict)
    point_shape: tuple
    dtype: str = "float64"
    get: tuple = ("nngp", "ntk")
    goal: float | None = None      # ours/NT (first call, compilation included) must be <= goal
    reps: int = 3
    steady: int = 1
    tile: int | None = None        # ours: compute tile by tile (kernel_tile), tile x tile points
    n_test: int = 0                # predict: test points
    outputs: int = 10              # predict: columns of y_train
    t: object = None               # predict: time(s)
    diag_reg: float = 1e-4
    compute_cov: bool = True       # predict: covariance too (SPEC default) or the mean alone
    solve_only: bool = True        # predict: also time factorize + predict on precomputed kernels
    nt: bool = True                # False: ours only (e.g. sizes NT cannot run here)
    per_entry: bool = False        # report ms per kernel entry (N^2 entries)
    ms_per_entry_goal: float | None = None
    mb_per_s_goal: float | None = None  # api: the answer's bytes over the median fetch time
    mem_limit_gb: float | None = None  # CUDA: cap torch's allocator at this many GiB
    time_budget_s: float | None = None  # tiled: stop starting new tiles after this long (figures
                                        # then come from the tiles done: time per entry, memory)
    note: str = ""
    extra: dict = field(default_factory=dict)


T10 = [float(v) for v in np.logspace(-1, 3, 10)]


def cases_for(size: str) -> list[Case]:
    if size == "small":
        return [
            Case("fc5-f64", "kernel", fc_spec(), 128, (32,), goal=0.5, reps=2),
            Case("fc5-f32", "kernel", fc_spec(), 128, (32,), "float32", goal=0.5, reps=2),
            Case("cnn-gap", "kernel", cnn_spec(3, "GlobalAvgPool", 64), 8, (6, 6, 3), goal=0.2, reps=2),
            Case("cnn-flatten", "kernel", cnn_spec(3, "Flatten", 64), 16, (8, 8, 3), goal=0.5, reps=2),
            Case("predict-1t", "predict", fc_spec(), 256, (32,), n_test=64, t=1.0, reps=2),
            Case("predict-10t", "predict", fc_spec(), 256, (32,), n_test=64, t=T10, reps=2),
            Case("predict-mean-1t", "predict", fc_spec(), 256, (32,), n_test=64, t=1.0, reps=1,
                 compute_cov=False),
            Case("predict-mean-10t", "predict", fc_spec(), 256, (32,), n_test=64, t=T10, reps=1,
                 compute_cov=False),
            Case("api-cached", "api", fc_spec(), 128, (32,), reps=2),
        ]
    if size == "full":
        return [
            Case("fc5-f64", "kernel", fc_spec(), 4096, (784,), goal=0.5),
            Case("fc5-f32", "kernel", fc_spec(), 4096, (784,), "float32", goal=0.5),
            Case("cnn-gap", "kernel", cnn_spec(3, "GlobalAvgPool"), 128, (8, 8, 3), goal=0.2),
            Case("cnn-flatten", "kernel", cnn_spec(3, "Flatten"), 256, (16, 16, 3), goal=0.5),
            Case("predict-1t", "predict", fc_spec(), 4096, (784,), n_test=1024, t=1.0),
            Case("predict-10t", "predict", fc_spec(), 4096, (784,), n_test=1024, t=T10,
                 note="with the covariance, each extra t is an M×N by N×N product (2MN² flops): the "
                      "floor of 10 t / 1 t is ~1.7 on a 2-core CPU (README, Benchmarks)"),
            Case("predict-mean-1t", "predict", fc_spec(), 4096, (784,), n_test=1024, t=1.0,
                 compute_cov=False, reps=2),
            Case("predict-mean-10t", "predict", fc_spec(), 4096, (784,), n_test=1024, t=T10,
                 compute_cov=False, reps=2),
            Case("api-cached", "api", fc_spec(), 2048, (784,), reps=9, mb_per_s_goal=500),
        ]
    if size == "gpu":
        return [
            Case("cnn-gap21-f32", "kernel", cnn_spec(21, "GlobalAvgPool"), 32, (32, 32, 3), "float32",
                 reps=2, tile=16, nt=False, per_entry=True, goal=None, ms_per_entry_goal=0.1,
                 note="target: <= 0.1 ms per NTK entry on one H200"),
            Case("fc5-f32-50k", "kernel", fc_spec(), 50_000, (3072,), "float32", reps=1, tile=10_000,
                 nt=False, per_entry=True),
            Case("predict-1t-20k", "predict", fc_spec(), 20_000, (784,), n_test=2000, t=1.0, reps=1,
                 steady=0, nt=False, solve_only=False),
            Case("predict-10t-20k", "predict", fc_spec(), 20_000, (784,), n_test=2000, t=T10, reps=1,
                 steady=0, nt=False, solve_only=False),
        ]
    if size == "gpu-memory":
        return [
            Case("cnn-gap3-cifar-512", "kernel", cnn_spec(3, "GlobalAvgPool"), 512, (32, 32, 3),
                 "float32", reps=1, steady=0, tile=16, nt=False, per_entry=True, mem_limit_gb=24,
                 time_budget_s=60,
                 note="must run within 24 GiB (torch allocator capped at 24 GiB); tiles of 16x16 "
                      "points; stops after 60 s and extrapolates"),
        ]
    raise SystemExit(f"unknown --size {size!r}")


# -- workers ----------------------------------------------------------------------------------

class WorkerError(RuntimeError):
    pass


class Worker:
    """One worker process speaking bench/protocol.py."""

    def __init__(self, label: str, python: str, script: str, env: dict | None = None):
        self.label = label
        self.proc = subprocess.Popen(
            [python, os.path.join(HERE, script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL,
            text=True, bufsize=1, cwd=ROOT, env={**os.environ, **(env or {})})

    def request(self, obj: dict, timeout: float) -> dict:
        if self.proc.poll() is not None:
            raise WorkerError(f"{self.label} worker exited with status {self.proc.returncode}")
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise WorkerError(f"{self.label} worker timed out after {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise WorkerError(f"{self.label} worker died (status {code}; killed for memory?)")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerError(f"{self.label}: {answer.get('error')}")
        return answer

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class ApiSide:
    """Ours for the "api" case: fetch a cached kernel through the REST API as npz (SPEC §3)."""

    label = "ours"

    def __init__(self, url: str, api_key: str | None):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=330)

    def request(self, obj: dict, timeout: float) -> dict:
        op = obj["op"]
        if op == "setup":
            c = obj["case"]
            x = np.load(c["x1"])
            import io

            buf = io.BytesIO()
            np.save(buf, x)
            r = self.http.post("/v1/datasets", content=buf.getvalue(),
                               headers={"Content-Type": "application/x-npy"})
            r.raise_for_status()
            self.body = {"architecture": c["spec"], "x1": {"dataset": r.json()["id"]},
                         "get": list(c["get"]), "dtype": c["dtype"]}
            t0 = time.perf_counter()
            first = self._fetch()            # computes (or finds) it: the cache is warm afterwards
            self.compute_s = time.perf_counter() - t0
            return {"ok": True, "compute_s": self.compute_s, "cached_on_first": first["cached"]}
        if op == "run":
            t0 = time.perf_counter()
            got = self._fetch()
            first = time.perf_counter() - t0
            if obj.get("save"):
                np.savez(obj["save"], **{k: got[k] for k in self.body["get"]})
            return {"ok": True, "first_s": first, "steady_s": [], "cached": bool(got["cached"]),
                    "bytes": got["bytes"]}
        if op == "peak":
            return {"ok": True, "peak_rss_mb": None, "peak_device_mb": None}
        raise WorkerError(op)

    def _fetch(self) -> dict:
        import io

        npz = {"Accept": "application/x-npz"}
        r = self.http.post("/v1/kernels", params={"wait": 300}, json=self.body, headers=npz)
        if r.status_code == 202:
            job = r.json()["job"]
            while job["status"] in ("queued", "running"):
                time.sleep(0.2)
                job = self.http.get(f"/v1/jobs/{job['id']}").json()
            r = self.http.get(f"/v1/jobs/{job['id']}/result", headers=npz)
        r.raise_for_status()
        if "npz" not in r.headers.get("content-type", ""):
            raise WorkerError(f"expected an npz answer, got {r.headers.get('content-type')}")
        with np.load(io.BytesIO(r.content)) as z:
            out = {k: z[k] for k in z.files}
        out["cached"] = bool(out.get("cached", False))
        out["bytes"] = len(r.content)
        return out

    def close(self):
        self.http.close()


# -- running a case ---------------------------------------------------------------------------

def make_data(case: Case, workdir: str) -> dict:
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    paths = {}

    def save(name, arr):
        p = os.path.join(workdir, f"{case.name}-{name}.npy")
        np.save(p, arr)
        paths[name] = p

    save("x1", rng.standard_normal((case.n, *case.point_shape)))
    if case.kind == "predict":
        save("x_test", rng.standard_normal((case.n_test, *case.point_shape)))
        save("y_train", rng.standard_normal((case.n, case.outputs)))
    return paths


def wire_case(case: Case, paths: dict, device: str | None) -> dict:
    d = {"name": case.name, "kind": case.kind, "spec": case.spec, "x1": paths["x1"], "x2": None,
         "get": list(case.get), "dtype": case.dtype, "device": device, "tile": case.tile,
         "steady": case.steady, "mem_limit_gb": case.mem_limit_gb,
         "time_budget_s": case.time_budget_s, "solve_only": case.solve_only}
    if case.kind == "predict":
        d["predict"] = {"x_test": paths["x_test"], "y_train": paths["y_train"], "t": case.t,
                        "kernel": "ntk", "diag_reg": case.diag_reg, "compute_cov": case.compute_cov}
    return d


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (the convention of tests/engine/test_oracle.py)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    diff = np.max(np.abs(ours - ref)) if ref.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_case(case: Case, args, workdir: str, nt_python: str | None) -> dict:
    paths = make_data(case, workdir)
    wire = wire_case(case, paths, args.device)
    rec = {"name": case.name, "kind": case.kind, "n": case.n, "point_shape": list(case.point_shape),
           "dtype": case.dtype, "goal": case.goal, "tile": case.tile, "note": case.note,
           "layers": len(case.spec["layers"]), "ours": {}, "nt": None, "errors": []}
    if case.kind == "predict":
        rec.update(n_test=case.n_test, t=case.t)
    sides = {}
    try:
        if case.kind == "api":
            sides["ours"] = ApiSide(args.url, os.environ.get("NTK_API_KEY"))
        else:
            env = {}
            sides["ours"] = Worker("ours", sys.executable, "ours_worker.py", env)
        if nt_python and case.nt:
            sides["nt"] = Worker("nt", nt_python, "nt_worker.py",
                                 {"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})
    except Exception as e:  # noqa: BLE001
        rec["errors"].append(f"start: {e}")
        for s in sides.values():
            s.close()
        return rec

    timings = {k: {"first": [], "steady": [], "answers": []} for k in sides}
    try:
        for label, side in list(sides.items()):
            try:
                rec[label] = {"setup": side.request({"op": "setup", "case": wire}, args.case_timeout)}
            except Exception as e:  # noqa: BLE001
                rec["errors"].append(f"{label} setup: {e}")
                side.close()
                del sides[label]
        for rep in range(case.reps):
            order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
            for label in order:
                if label not in sides:
                    continue
                save = os.path.join(workdir, f"{case.name}-{label}.npz") if rep == 0 else None
                try:
                    a = sides[label].request({"op": "run", "save": save}, args.case_timeout)
                except Exception as e:  # noqa: BLE001
                    rec["errors"].append(f"{label} rep {rep}: {e}")
                    sides.pop(label).close()
                    continue
                timings[label]["first"].append(a["first_s"])
                timings[label]["steady"].extend(a.get("steady_s", []))
                timings[label]["answers"].append(a)
        for label, side in sides.items():
            try:
                rec[label]["peak"] = side.request({"op": "peak"}, 60)
            except Exception as e:  # noqa: BLE001
                rec["errors"].append(f"{label} peak: {e}")
    finally:
        for s in sides.values():
            s.close()

    for label, tm in timings.items():
        if not tm["first"]:
            continue
        r = rec[label] or {}
        r.update(first_s=median(tm["first"]), steady_s=median(tm["steady"]),
                 first_all=tm["first"], steady_all=tm["steady"])
        last = tm["answers"][-1]
        for key in ("tiles_done", "tiles_total", "entries_done", "entries_total"):
            if key in last:
                r[key] = last[key]
        for key in ("factorize_s", "predict_s", "predict_one_t_s"):
            vals = [a[key] for a in tm["answers"] if key in a]
            if vals:
                r[key] = median(vals)
        rec[label] = r
    o, n = rec.get("ours") or {}, rec.get("nt") or {}
    for kind in ("first", "steady"):
        if o.get(f"{kind}_s") and n.get(f"{kind}_s"):
            rec[f"ratio_{kind}"] = o[f"{kind}_s"] / n[f"{kind}_s"]
    if case.per_entry and o.get("first_s"):
        best = o.get("steady_s") or o["first_s"]
        rec["ms_per_entry"] = 1e3 * best / o.get("entries_done", case.n**2)
        if o.get("entries_done", case.n**2) < case.n**2:
            rec["partial"] = True
            rec["extrapolated_full_s"] = best * case.n**2 / o["entries_done"]
    if case.ms_per_entry_goal is not None and rec.get("ms_per_entry") is not None:
        rec["ms_per_entry_goal"] = case.ms_per_entry_goal
        rec["meets_goal"] = rec["ms_per_entry"] <= case.ms_per_entry_goal
    if case.kind == "api":
        rec["ours"]["compute_s"] = (rec["ours"].get("setup") or {}).get("compute_s")
        if o.get("first_s"):
            rec["mb_per_s"] = timings["ours"]["answers"][-1]["bytes"] / 1e6 / o["first_s"]
    if case.mb_per_s_goal is not None and rec.get("mb_per_s") is not None:
        rec["mb_per_s_goal"] = case.mb_per_s_goal
        rec["meets_goal"] = rec["mb_per_s"] >= case.mb_per_s_goal

    # Agreement with neural-tangents.
    fo, fn = (os.path.join(workdir, f"{case.name}-{s}.npz") for s in ("ours", "nt"))
    if os.path.exists(fo) and os.path.exists(fn):
        with np.load(fo) as a, np.load(fn) as b:
            rec["max_rel_err"] = {k: rel_err(a[k], b[k]) for k in b.files if k in a.files}
        tol = 1e-6 if case.dtype == "float64" else 1e-3
        rec["tol"] = tol
        rec["agrees"] = bool(rec["max_rel_err"]) and all(v <= tol for v in rec["max_rel_err"].values())
        for f in (fo, fn):
            os.remove(f)
    if rec.get("ratio_first") is not None and case.goal is not None:
        rec["meets_goal"] = rec["ratio_first"] <= case.goal
    return rec


# -- reporting --------------------------------------------------------------------------------

def fmt_s(v):
    if v is None:
        return "-"
    return f"{v * 1e3:.1f}ms" if v < 1 else f"{v:.2f}s"


def fmt_r(v):
    return "-" if v is None else f"{v:.3f}"


def print_table(records, goals, out=sys.stdout):
    head = ["case", "ours 1st", "ours steady", "NT 1st", "NT steady", "ours/NT 1st", "ours/NT st.",
            "goal", "max rel err", "peak MB ours/NT"]
    rows = []
    for r in records:
        o, n = r.get("ours") or {}, r.get("nt") or {}
        goal = "-" if r.get("goal") is None else f"≤{r['goal']}" + (
            "" if "meets_goal" not in r else (" ok" if r["meets_goal"] else " MISS"))
        err = r.get("max_rel_err")
        err = "-" if not err else f"{max(err.values()):.1e}" + ("" if r.get("agrees") else " BAD")
        pk = lambda s: "-" if not (s.get("peak") or {}).get("peak_rss_mb") else (
            f"{s['peak']['peak_rss_mb']:.0f}" + (f"/gpu {s['peak']['peak_device_mb']:.0f}"
                                                 if s["peak"].get("peak_device_mb") else ""))
        rows.append([r["name"], fmt_s(o.get("first_s")), fmt_s(o.get("steady_s")), fmt_s(n.get("first_s")),
                     fmt_s(n.get("steady_s")), fmt_r(r.get("ratio_first")), fmt_r(r.get("ratio_steady")),
                     goal, err, f"{pk(o)}/{pk(n)}"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
    print(line(head), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for row in rows:
        print(line(row), file=out)
    for r in records:
        extra = []
        if r.get("ms_per_entry") is not None:
            extra.append(f"{r['ms_per_entry']:.4f} ms per kernel entry" + (
                "" if r.get("ms_per_entry_goal") is None else
                f" (goal ≤ {r['ms_per_entry_goal']}: {'ok' if r['meets_goal'] else 'MISS'})"))
        if r.get("partial"):
            o = r.get("ours") or {}
            extra.append(f"time budget: {o.get('tiles_done')}/{o.get('tiles_total')} tiles done, "
                         f"whole matrix extrapolated {fmt_s(r['extrapolated_full_s'])}")
        o = r.get("ours") or {}
        if "factorize_s" in o:
            extra.append(f"ours solve only: factorize {fmt_s(o['factorize_s'])}, predict {fmt_s(o['predict_s'])}"
                         f" (one t: {fmt_s(o.get('predict_one_t_s'))})")
        if r["kind"] == "api" and o.get("compute_s") is not None:
            extra.append(f"first request (compute) {fmt_s(o['compute_s'])}")
        if r.get("mb_per_s") is not None:
            extra.append(f"cached answer served at {r['mb_per_s']:.0f} MB/s" + (
                "" if r.get("mb_per_s_goal") is None else
                f" (goal ≥ {r['mb_per_s_goal']:.0f}: {'ok' if r['meets_goal'] else 'MISS'})"))
        if r.get("max_rel_err"):
            extra.append("rel err " + ", ".join(f"{k} {v:.1e}" for k, v in r["max_rel_err"].items()))
        if r.get("note"):
            extra.append(r["note"])
        for e in r["errors"]:
            extra.append(f"ERROR {e}")
        if extra:
            print(f"  {r['name']}: " + "; ".join(extra), file=out)
    for g in goals:
        print(f"  goal {g['name']}: {g['value']:.3f} (≤ {g['goal']}) {'ok' if g['ok'] else 'MISS'}"
              f"  [{g['what']}]", file=out)


def derived_goals(records) -> list[dict]:
    """Goals across cases: 10 values of t cost at most 1.2x one value (case X-10t against X-1t)."""
    by = {r["name"]: r for r in records}
    goals = []
    for name, r10 in by.items():
        r1 = by.get(name.replace("-10t", "-1t")) if "-10t" in name else None
        if r1 is None:
            continue
        for side in ("ours", "nt"):
            a, b = (r10.get(side) or {}), (r1.get(side) or {})
            va = a.get("steady_s") or a.get("first_s")
            vb = b.get("steady_s") or b.get("first_s")
            if va and vb:
                goals.append({"name": f"{side} {name} / {r1['name']}", "value": va / vb, "goal": 1.2,
                              "ok": va / vb <= 1.2, "what": "end to end (kernels + solve)"})
        a = r10.get("ours") or {}
        if a.get("predict_s") and a.get("predict_one_t_s"):
            va = a["factorize_s"] + a["predict_s"]
            vb = a["factorize_s"] + a["predict_one_t_s"]
            goals.append({"name": f"ours solve {name}: 10 t / 1 t", "value": va / vb, "goal": 1.2,
                          "ok": va / vb <= 1.2,
                          "what": "factorize + predict on precomputed kernels, one factorization"})
    return goals


def machine_info(args) -> dict:
    info = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
            "python": sys.version.split()[0], "cpus": os.cpu_count(), "size": args.size,
            "device": args.device or os.environ.get("NTK_DEVICE", "auto")}
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "ntk/engine"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["git"] = head + ("+dirty-engine" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_json(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=float)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="full", choices=["small", "full", "gpu", "gpu-memory"])
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--device", default=None, help="our engine's device (cpu, cuda, cuda:N; default NTK_DEVICE/auto)")
    ap.add_argument("--url", default=None, help="a running server for the api-cached case (skipped without)")
    ap.add_argument("--cases", default=None, help="comma-separated case names to run (default all)")
    ap.add_argument("--reps", type=int, default=None, help="override every case's repetitions")
    ap.add_argument("--case-timeout", type=float, default=900, help="seconds one worker call may take")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a result disagrees with NT")
    args = ap.parse_args(argv)

    nt_python = os.environ.get("NT_PYTHON") or None
    if not nt_python:
        print("notice: NT_PYTHON is not set: timing our engine only (no neural-tangents ratios)", flush=True)
    cases = cases_for(args.size)
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.name in wanted]
    if not args.url:
        skipped = [c.name for c in cases if c.kind == "api"]
        if skipped:
            print(f"notice: no --url: skipping {', '.join(skipped)}", flush=True)
        cases = [c for c in cases if c.kind != "api"]
    if args.reps:
        for c in cases:
            c.reps = args.reps

    records = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ntk-bench-") as workdir:
        for case in cases:
            t0 = time.perf_counter()
            print(f"running {case.name} ...", flush=True)
            rec = run_case(case, args, workdir, nt_python)
            rec["wall_s"] = time.perf_counter() - t0
            records.append(rec)
            if args.out:   # after every case, so a run cut short still leaves its figures
                write_json(args.out, {"meta": {**machine_info(args), "nt_python": nt_python,
                                               "complete": False}, "cases": records, "goals": []})
            o, n = rec.get("ours") or {}, rec.get("nt") or {}
            print(f"  {case.name}: ours {fmt_s(o.get('first_s'))} / NT {fmt_s(n.get('first_s'))}"
                  f" (ratio {fmt_r(rec.get('ratio_first'))}) in {rec['wall_s']:.1f}s"
                  + "".join(f"\n  ERROR {e}" for e in rec["errors"]), flush=True)
    goals = derived_goals(records)
    print()
    print_table(records, goals)
    result = {"meta": {**machine_info(args), "nt_python": nt_python, "complete": True,
                       "wall_s": time.perf_counter() - t_start},
              "cases": records, "goals": goals}
    if args.out:
        write_json(args.out, result)
        print(f"\nwrote {args.out}")
    bad = [r["name"] for r in records if r.get("agrees") is False]
    if bad:
        print(f"results disagree with neural-tangents: {', '.join(bad)}")
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
