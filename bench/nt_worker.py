"""Benchmark worker for neural-tangents (run by bench/harness.py under $NT_PYTHON).

Builds the model of a SPEC §2 JSON spec with ``neural_tangents.stax`` and times its
``kernel_fn`` (or ``predict.gradient_descent_mse_ensemble``) the way a user would run it:

* first call: a freshly built and ``jax.jit``-ed kernel_fn, so the figure includes tracing and
  XLA compilation ("the whole computation including compilation");
* steady state: further calls of the same compiled function.

Protocol: bench/protocol.py. Needs numpy, jax and neural-tangents only (not torch, not this
repository's packages).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402

import protocol  # noqa: E402
from nt_bridge import to_stax  # noqa: E402


def spec_to_kernel_fn(spec: dict):
    _, _, kernel_fn = to_stax(spec)
    return kernel_fn


# -- the case ---------------------------------------------------------------------------------

STATE: dict = {}


def _load(path, dtype):
    return None if path is None else jnp.asarray(np.load(path).astype(dtype))


def setup(req):
    case = req["case"]
    dtype = np.dtype(case["dtype"])
    STATE.clear()
    STATE["case"] = case
    STATE["x1"] = _load(case["x1"], dtype)
    STATE["x2"] = _load(case.get("x2"), dtype)
    p = case.get("predict")
    if p:
        STATE["x_test"] = _load(p["x_test"], dtype)
        STATE["y_train"] = _load(p["y_train"], dtype)
    return {"rss_mb": protocol.rss_mb(), "jax_backend": jax.default_backend()}


def _block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a,
                                  tree)


def _fresh_jitted():
    return jax.jit(spec_to_kernel_fn(STATE["case"]["spec"]), static_argnames=("get",))


def _kernel_call(fn):
    case = STATE["case"]
    out = fn(STATE["x1"], STATE["x2"], get=tuple(case["get"]))
    out = _block(out)
    return {g: np.asarray(o) for g, o in zip(case["get"], out)}


def _predict_call(fn):
    case = STATE["case"]
    p = case["predict"]
    predict_fn = nt.predict.gradient_descent_mse_ensemble(
        fn, STATE["x1"], STATE["y_train"], learning_rate=p.get("learning_rate", 1.0),
        diag_reg=p.get("diag_reg", 0.0), diag_reg_absolute_scale=p.get("diag_reg_absolute_scale", False))
    t = p.get("t")
    t = None if t is None else jnp.asarray(t, dtype=STATE["x1"].dtype)
    out = predict_fn(t=t, x_test=STATE["x_test"], get=p.get("kernel", "ntk"),
                     compute_cov=p.get("compute_cov", True))
    out = _block(out)
    if p.get("compute_cov", True):
        return {"mean": np.asarray(out.mean), "covariance": np.asarray(out.covariance)}
    return {"mean": np.asarray(out)}


def run(req):
    case = STATE["case"]
    call = _predict_call if case["kind"] == "predict" else _kernel_call
    t0 = time.perf_counter()
    fn = _fresh_jitted()
    result = call(fn)
    first = time.perf_counter() - t0
    steady = []
    for _ in range(int(case.get("steady", 1))):
        t0 = time.perf_counter()
        call(fn)
        steady.append(time.perf_counter() - t0)
    if req.get("save"):
        np.savez(req["save"], **result)
    return {"first_s": first, "steady_s": steady}


def peak(req):
    return {"peak_rss_mb": protocol.peak_rss_mb(), "peak_device_mb": None}


if __name__ == "__main__":
    protocol.serve({"setup": setup, "run": run, "peak": peak})
