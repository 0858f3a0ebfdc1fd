#!/usr/bin/env python3
"""Where does our engine spend its time on one harness case?

    python3 bench/profile_engine.py cnn-gap --size full [--device cpu] [--top 25]

Runs the case once to warm up, then once under cProfile (time per function of ntk/engine,
cumulative) and once under torch.profiler (time per aten op, self CPU / CUDA), and prints both.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import harness  # noqa: E402
from ntk.engine import kernel_fn  # noqa: E402
from ntk.worker.allocator import keep_freed_memory  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def make_call(case: harness.Case, device):
    with tempfile.TemporaryDirectory() as d:
        paths = harness.make_data(case, d)
        arrays = {k: np.load(p) for k, p in paths.items()}
    dtype = DTYPES[case.dtype]
    x1 = torch.as_tensor(arrays["x1"], dtype=dtype, device=device)
    if case.kind == "kernel":
        return lambda: kernel_fn(case.spec, x1, None, get=case.get, dtype=dtype, device=device)
    from ntk.engine.predict import predict_from_spec

    xt = torch.as_tensor(arrays["x_test"], dtype=dtype, device=device)
    y = torch.as_tensor(arrays["y_train"], dtype=dtype, device=device)
    return lambda: predict_from_spec(case.spec, x1, y, xt, kernel="ntk", t=case.t, diag_reg=case.diag_reg,
                                     compute_cov=case.compute_cov, dtype=dtype, device=device)


def main():
    keep_freed_memory()  # as a worker does at start
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--size", default="full")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-warmup", action="store_true")
    args = ap.parse_args()
    case = next(c for c in harness.cases_for(args.size) if c.name == args.case)
    device = torch.device(args.device)
    call = make_call(case, device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    if not args.no_warmup:
        t0 = time.perf_counter()
        call()
        sync()
        print(f"warm-up call: {time.perf_counter() - t0:.3f} s")

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    call()
    sync()
    prof.disable()
    print(f"cProfile'd call: {time.perf_counter() - t0:.3f} s\n")
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats("cumulative").print_stats(r"ntk/engine", args.top)
    print(s.getvalue())

    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts, record_shapes=True) as p:
        call()
        sync()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(p.key_averages().table(sort_by=key, row_limit=args.top))
    print(p.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=args.top))


if __name__ == "__main__":
    main()
