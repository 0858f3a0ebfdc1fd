"""Benchmark worker for our PyTorch engine (run by bench/harness.py; protocol: bench/protocol.py).

Times ``ntk.engine.kernel_fn`` (whole, or tile by tile with ``kernel_tile`` when the case
gives ``tile``) and ``ntk.engine.predict.predict_from_spec``. There is nothing to compile,
so the first call and the steady state differ only by warm-up effects; both are reported.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import protocol  # noqa: E402
from ntk.core.settings import Settings  # noqa: E402
from ntk.engine import Budget, kernel_fn, kernel_tile, resolve_device, tiles  # noqa: E402
from ntk.worker.allocator import keep_freed_memory  # noqa: E402

STATE: dict = {}
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _sync():
    if STATE["device"].type == "cuda":
        torch.cuda.synchronize(STATE["device"])


def setup(req):
    case = req["case"]
    STATE.clear()
    STATE["case"] = case
    STATE["dtype"] = DTYPES[case["dtype"]]
    settings = Settings()  # NTK_DEVICE, NTK_BLOCK_BYTES and NTK_CACHE_BYTES, as a worker reads them
    STATE["budget"] = Budget(settings.block_bytes, settings.cache_bytes)
    STATE["device"] = device = resolve_device(case.get("device") or settings.device)
    load = lambda p: None if p is None else torch.as_tensor(np.load(p), dtype=STATE["dtype"], device=device)
    STATE["x1"] = load(case["x1"])
    STATE["x2"] = load(case.get("x2"))
    p = case.get("predict")
    if p:
        STATE["x_test"] = load(p["x_test"])
        STATE["y_train"] = load(p["y_train"])
    # Warm the BLAS / CUDA context up outside the timed region (imports, thread pools).
    a = torch.ones((64, 64), dtype=STATE["dtype"], device=device)
    (a @ a).sum().item()
    if device.type == "cuda":
        if case.get("mem_limit_gb"):
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, case["mem_limit_gb"] * 2**30 / total), device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return {"rss_mb": protocol.rss_mb(), "device": str(device), "threads": torch.get_num_threads(),
            "engine_sha": engine_fingerprint()}


def engine_fingerprint() -> str:
    """Hash of the engine's source as run (the tree may hold uncommitted changes)."""
    import hashlib

    h = hashlib.sha256()
    root = os.path.join(os.path.dirname(HERE), "workers", "engine")
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    h.update(f.encode() + fh.read())
    return h.hexdigest()[:12]


def _kernel_whole():
    c = STATE["case"]
    out = kernel_fn(c["spec"], STATE["x1"], STATE["x2"], get=c["get"], dtype=STATE["dtype"],
                    device=STATE["device"], budget=STATE["budget"])
    _sync()
    return out


def _kernel_tiled():
    """Every tile computed and written into preallocated (N1, N2) matrices on the device."""
    c = STATE["case"]
    x1, x2 = STATE["x1"], STATE["x2"]
    n1 = x1.shape[0]
    n2 = None if x2 is None else x2.shape[0]
    shape = (n1, n1 if n2 is None else n2)
    full = {g: torch.zeros(shape, dtype=STATE["dtype"], device=STATE["device"]) for g in c["get"]}
    all_tiles = list(tiles(n1, n2, int(c["tile"])))
    budget = c.get("time_budget_s")
    t0 = time.perf_counter()
    done = entries = 0
    for tile in all_tiles:
        if budget is not None and done and time.perf_counter() - t0 > budget:
            break   # enough tiles for the figures (memory per tile, time per entry)
        i0, i1, j0, j1 = tile
        done += 1
        entries += (i1 - i0) * (j1 - j0) * (2 if n2 is None and i0 != j0 else 1)
        block = kernel_tile(c["spec"], x1, x2, tile, get=c["get"], dtype=STATE["dtype"],
                            device=STATE["device"], budget=STATE["budget"])
        for g, b in block.items():
            full[g][i0:i1, j0:j1] = b
            if n2 is None and i0 != j0:
                full[g][j0:j1, i0:i1] = b.T
        del block
    _sync()
    STATE["tile_stats"] = {"tiles_done": done, "tiles_total": len(all_tiles), "entries_done": entries,
                           "entries_total": shape[0] * shape[1]}
    return full


def _predict():
    from ntk.engine.predict import predict_from_spec

    c = STATE["case"]
    p = c["predict"]
    out = predict_from_spec(c["spec"], STATE["x1"], STATE["y_train"], STATE["x_test"],
                            kernel=p.get("kernel", "ntk"), t=p.get("t"),
                            learning_rate=p.get("learning_rate", 1.0), diag_reg=p.get("diag_reg", 0.0),
                            diag_reg_absolute_scale=p.get("diag_reg_absolute_scale", False),
                            compute_cov=p.get("compute_cov", True), dtype=STATE["dtype"],
                            device=STATE["device"], budget=STATE["budget"])
    _sync()
    res = {"mean": out.mean}
    if out.covariance is not None:
        res["covariance"] = out.covariance
    return res


def _solve_only():
    """Factorize + predict from kernels computed beforehand (untimed): the t-dependent part."""
    from ntk.engine.predict import factorize, method_for, predict, required_kernels

    c = STATE["case"]
    p = c["predict"]
    kernel = p.get("kernel", "ntk")
    cov = p.get("compute_cov", True)
    if "blocks" not in STATE:
        need = required_kernels(kernel, cov)
        kw = dict(dtype=STATE["dtype"], device=STATE["device"])
        STATE["blocks"] = (
            kernel_fn(c["spec"], STATE["x1"], None, get=need["train_train"], **kw),
            kernel_fn(c["spec"], STATE["x_test"], STATE["x1"], get=need["test_train"], **kw),
            kernel_fn(c["spec"], STATE["x_test"], None, get=need["test_test"], **kw)
            if need["test_test"] else None)
    k_dd, k_td, k_tt = STATE["blocks"]
    _sync()
    t0 = time.perf_counter()
    f = factorize(k_dd, kernel, diag_reg=p.get("diag_reg", 0.0),
                  diag_reg_absolute_scale=p.get("diag_reg_absolute_scale", False),
                  method=method_for(p.get("t")), dtype=STATE["dtype"], device=STATE["device"])
    _sync()
    t1 = time.perf_counter()
    predict(f, STATE["y_train"], k_td, k_tt, kernel=kernel, t=p.get("t"),
            learning_rate=p.get("learning_rate", 1.0), compute_cov=cov)
    _sync()
    t2 = time.perf_counter()
    # The same factorization at one time value (the first of t): the per-t cost, free of the noise
    # that two separate factorizations would carry.
    ts = p.get("t")
    one = ts[0] if isinstance(ts, (list, tuple)) and ts else ts
    predict(f, STATE["y_train"], k_td, k_tt, kernel=kernel, t=one,
            learning_rate=p.get("learning_rate", 1.0), compute_cov=cov)
    _sync()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def run(req):
    c = STATE["case"]
    if c["kind"] == "predict":
        call = _predict
    else:
        call = _kernel_tiled if c.get("tile") else _kernel_whole
    t0 = time.perf_counter()
    result = call()
    first = time.perf_counter() - t0
    if req.get("save"):
        np.savez(req["save"], **{k: v.detach().cpu().numpy() for k, v in result.items()})
    del result
    steady = []
    for _ in range(int(c.get("steady", 1))):
        t0 = time.perf_counter()
        r = call()
        steady.append(time.perf_counter() - t0)
        del r
    extra = {}
    if c["kind"] == "predict" and c.get("solve_only", True):
        extra["factorize_s"], extra["predict_s"], extra["predict_one_t_s"] = _solve_only()
    if "tile_stats" in STATE:
        extra.update(STATE["tile_stats"])
    return {"first_s": first, "steady_s": steady, **extra}


def peak(req):
    dev = STATE.get("device")
    device_mb = None
    if dev is not None and dev.type == "cuda":
        device_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    return {"peak_rss_mb": protocol.peak_rss_mb(), "peak_device_mb": device_mb}


if __name__ == "__main__":
    keep_freed_memory()  # as a worker does at start
    protocol.serve({"setup": setup, "run": run, "peak": peak})
