#!/usr/bin/env python3
"""What a sweep shares: many architectures' kernels through ntk/engine/sweep.py against
``kernel_fn`` on each architecture alone, in this process.

    python3 bench/sweep.py [--points 200] [--dim 64] [--max-depth 50] [--reps 5]
    NT_PYTHON=/tmp/nt/bin/python python3 bench/sweep.py     # adds neural-tangents, per architecture
    python3 bench/sweep.py --url http://localhost:8000       # adds the same sweep through the service

Two workloads, on random points (NNGP and NTK, train × train, float64):

* issue 16's grid: FC depth 1–5 × w_std 1.0/1.5/2.0 × b_std 0/0.1 (30 architectures; Dense 512 +
  Relu blocks, a Dense readout): the sweep's kernels, the sweep with its rows (marginal likelihood
  with a fitted noise, on random ±1 targets), and one ``kernel_fn`` per architecture. With
  NT_PYTHON, neural-tangents computes each architecture with a freshly jitted kernel_fn, as a
  user looping over the grid would (bench/nt_worker.py; the sum of the 30 first calls).
* a depth grid 1…``--max-depth``: the sweep's kernels against the single deepest kernel
  (goal: at most 1.5×, the price of the readouts and of writing D results out).

With ``--url``, the issue's grid with its rows also goes through a running service as one
request (``Client.sweep``, POST /v1/sweeps): new requests (each rep its own targets, so none is
answered from the cache) and the same request again (the cached answer), against the same
sweep in this process.

Figures are medians of ``--reps`` runs; the ratios are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "clients", "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ntk.engine import kernel_fn  # noqa: E402
from ntk.engine.sweep import sweep, sweep_kernels  # noqa: E402
from ntk.spec.sweep_grid import expand  # noqa: E402
from ntk.worker.allocator import keep_freed_memory  # noqa: E402

FC = {"block": [{"type": "Dense", "out_dim": 512}, {"type": "Relu"}],
      "readout": [{"type": "Dense", "out_dim": 1}]}
ISSUE_GRID = {"depth": [1, 2, 3, 4, 5], "w_std": [1.0, 1.5, 2.0], "b_std": [0.0, 0.1]}
DEPTH_GOAL = 1.5


def timed(reps: int, *fns) -> list[float]:
    """Median seconds of each function (``runs``)."""
    return [statistics.median(seconds) for seconds in runs(reps, *fns)]


def runs(reps: int, *fns) -> list[list[float]]:
    """Seconds of each run of each function, the functions taking turns so that a machine's
    drifting load weighs on all of them alike."""
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, seconds in zip(fns, times):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    return times


def kernels_together(architectures, x):
    return list(sweep_kernels(architectures, x))


def kernels_alone(architectures, x):
    return [kernel_fn(arch, x) for arch in architectures]


def neural_tangents(architectures, x, nt_python: str) -> float:
    """Seconds neural-tangents takes for every architecture, each a freshly jitted kernel_fn."""
    import harness

    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, "x.npy")
        np.save(path, x)
        worker = harness.Worker("neural-tangents", nt_python, "nt_worker.py")
        try:
            total = 0.0
            for arch in architectures:
                case = {"kind": "kernel", "spec": arch.model_dump(mode="json"), "dtype": "float64", "x1": path,
                        "x2": None, "get": ["nngp", "ntk"], "steady": 0}
                worker.request({"op": "setup", "case": case}, timeout=600)
                total += worker.request({"op": "run", "save": None}, timeout=600)["first_s"]
            return total
        finally:
            worker.close()


def through_service(url: str, x: np.ndarray, reps: int, in_process: float) -> None:
    """The issue's grid with rows as one request to the service: new requests, then a cached one."""
    from ntk_client import Client

    targets = iter([np.sign(np.random.default_rng(1000 + i).normal(size=(len(x), 1))) for i in range(reps + 1)])
    first = next(targets)
    with Client(url, progress=False) as client:
        client.sweep(x, first, base=FC, grid=ISSUE_GRID)  # computed once: the repeat below is cached
        new, cached = timed(reps, lambda: client.sweep(x, next(targets), base=FC, grid=ISSUE_GRID),
                            lambda: client.sweep(x, first, base=FC, grid=ISSUE_GRID))
    print(f"  through the service ({url})")
    print(f"    a new sweep request        {new:8.3f} s   {new / in_process:5.2f}x in-process with rows")
    print(f"    the same request again     {cached:8.3f} s   (cached answer)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-depth", type=int, default=50)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--url", help="also time the issue's grid through this running service (POST /v1/sweeps)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default torch's; 1 keeps a shared, loaded machine from "
                             "oversubscribing its cores)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the worker and the CLI do before they compute
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # numpy's BLAS: the fitted noise's eigendecompositions

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.points, args.dim))
    y = np.sign(rng.normal(size=(args.points, 1)))
    points = expand(FC, ISSUE_GRID)
    grid = [p.architecture for p in points]

    print(f"{len(grid)} FC architectures (depth 1-5 x w_std 1.0/1.5/2.0 x b_std 0/0.1), "
          f"{args.points} points of dimension {args.dim}, NNGP + NTK, median of {args.reps}")
    alone, together, with_rows = timed(args.reps, lambda: kernels_alone(grid, x), lambda: kernels_together(grid, x),
                                       lambda: sweep(points, x, y))
    print(f"  kernel_fn per architecture   {alone:8.3f} s")
    print(f"  sweep kernels                {together:8.3f} s   {together / alone:5.2f}x kernel_fn per architecture")
    print(f"  sweep with rows (fitted ε)   {with_rows:8.3f} s")
    nt_python = os.environ.get("NT_PYTHON")
    if nt_python:
        nt = neural_tangents(grid, x, nt_python)
        print(f"  neural-tangents, jit per architecture {nt:8.3f} s   sweep kernels {nt / together:6.1f}x faster")
    else:
        print("  (NT_PYTHON is not set: neural-tangents not run)")

    if args.url:
        through_service(args.url, x, args.reps, with_rows)

    depths = [p.architecture for p in expand(FC, {"depth": list(range(1, args.max_depth + 1)),
                                                  "w_std": [1.5], "b_std": [0.05]})]
    deepest_runs, sweep_runs = runs(args.reps, lambda: kernel_fn(depths[-1], x), lambda: kernels_together(depths, x))
    deepest, depth_sweep = statistics.median(deepest_runs), statistics.median(sweep_runs)
    print(f"depth grid 1..{args.max_depth} (w_std 1.5, b_std 0.05)")
    print(f"  single depth-{args.max_depth} kernel      {deepest:8.3f} s")
    print(f"  sweep of depths 1..{args.max_depth}     {depth_sweep:8.3f} s   "
          f"{depth_sweep / deepest:5.2f}x the deepest alone (goal <= {DEPTH_GOAL}x)")
    each = sorted(after / before for before, after in zip(deepest_runs, sweep_runs))
    print(f"  each rep's ratio, sorted       {' '.join(f'{r:.2f}' for r in each)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
