"""Generate the neural-tangents oracle fixtures for ``ntk/engine/predict.py``.

Run with the oracle venv (neural-tangents 0.6.5 + jax 0.4.30, x64)::

    /tmp/nt/bin/python tests/engine/generate_predict_fixtures.py [--only SUBSTRING] [--list]

Writes ``tests/fixtures/predict/<case>.npz`` and ``tests/fixtures/predict/INDEX.json``
(case -> description). Every case holds:

* kernel blocks (float64): ``{nngp,ntk}_{train_train,test_train,test_test}``, ``y_train``;
  for end-to-end cases (``meta["e2e"]``) also ``x_train``, ``x_test``;
* ``meta``: a 0-d str array holding JSON: ``kernel`` ("ntk"/"nngp"/"ntkgp"), ``t_kind``
  ("none"/"scalar"/"list"), ``t`` (null / number / list, ``Infinity`` allowed),
  ``learning_rate``, ``diag_reg``, ``diag_reg_absolute_scale``, ``compute_cov``, ``oracle``
  (which NT call produced the expectation), ``e2e``, ``spec`` (SPEC §2 JSON, null for synthetic
  kernels), ``max_learning_rate`` (NT ``predict.max_learning_rate(ntk_train_train,
  y_train.size)``), ``expect_nan`` (NT itself returns NaN; the engine must raise
  ``NotPositiveDefinite`` instead);
* expectations: ``mean``, ``covariance`` (when ``compute_cov``).

How each expectation is computed (predictions use a kernel_fn that returns the stored blocks,
so the oracle sees exactly the matrices the test feeds to the engine; the generator checks
this equals NT's own stax kernel_fn end to end):

* ``ntk`` / ``nngp``: ``nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train,
  learning_rate, diag_reg, diag_reg_absolute_scale)(t, x_test, get, compute_cov)``.
* ``ntkgp`` at ``t=None``: ``nt.predict.gp_inference(k_dd, y_train, diag_reg,
  diag_reg_absolute_scale)(get="ntkgp", k_test_train, k_test_test)`` (the ensemble rejects
  ``get="ntkgp"``).
* ``ntkgp`` at finite t (our documented extension, He et al. 2020): the ensemble with
  ``get="nngp"`` and a kernel_fn whose NNGP is the NTK. At ``t=None`` that equals
  ``gp_inference(get="ntkgp")`` (asserted here).

This file is NOT a pytest module (no ``test_`` prefix): it needs jax / neural-tangents.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents._src import predict as nt_predict  # noqa: E402

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from nt_bridge import to_stax  # noqa: E402  (the translation the kernel fixtures and the NT benchmark use)

OUT_DIR = ROOT / "tests" / "fixtures" / "predict"
KERNELS = ("nngp", "ntk")
PAIRS = ("train_train", "test_train", "test_test")

# ---------------------------------------------------------------------------------------------
# Architectures: SPEC §2 JSON, built with stax by the shared bridge (bench/nt_bridge.py).
# ---------------------------------------------------------------------------------------------

ARCHS = {
    "fc": dict(
        spec={"parameterization": "ntk", "layers": [
            {"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05},
            {"type": "Relu"},
            {"type": "Dense", "out_dim": 1, "w_std": 1.5, "b_std": 0.05}]},
        x_shape=(4,), n_train=12, n_test=6,
        desc="Dense(512,1.5,.05)-Relu-Dense(1,1.5,.05), ntk parameterization, x in R^4"),
    "fcerf": dict(
        spec={"parameterization": "standard", "layers": [
            {"type": "Dense", "out_dim": 256, "w_std": 1.3, "b_std": 0.1},
            {"type": "Erf"},
            {"type": "Dense", "out_dim": 256, "w_std": 1.3, "b_std": 0.1},
            {"type": "Erf"},
            {"type": "Dense", "out_dim": 1, "w_std": 1.0}]},
        x_shape=(3,), n_train=9, n_test=5,
        desc="2x[Dense(256,1.3,.1)-Erf]-Dense(1,1.0), standard parameterization, x in R^3"),
    "cnn": dict(
        spec={"parameterization": "ntk", "layers": [
            {"type": "Conv", "out_chan": 8, "filter_shape": [3, 3], "padding": "SAME",
             "w_std": 1.4, "b_std": 0.1},
            {"type": "Relu"},
            {"type": "Conv", "out_chan": 8, "filter_shape": [2, 2], "w_std": 1.4, "b_std": 0.1},
            {"type": "Relu"},
            {"type": "Flatten"},
            {"type": "Dense", "out_dim": 1, "w_std": 1.2}]},
        x_shape=(4, 4, 2), n_train=8, n_test=4,
        desc="Conv(8,3x3,SAME)-Relu-Conv(8,2x2,VALID)-Relu-Flatten-Dense(1), NHWC 4x4x2"),
}

# (name, diag_reg, diag_reg_absolute_scale, learning_rate, t list)
REGIMES = {
    "rel": (1e-4, False, 1.0, [0.0, 0.3, 3.0, 30.0, 300.0, 3000.0]),
    "abs": (1e-2, True, 0.5, [0.0, 0.3, 3.0, 30.0, 300.0, float("inf")]),
    "zero": (0.0, False, 2.0, [0.0, 1.0, 10.0, 100.0, 1000.0]),
}
T_SCALAR = 10.0
MODES = ("ntk", "nngp", "ntkgp")


# ---------------------------------------------------------------------------------------------
# Oracle plumbing
# ---------------------------------------------------------------------------------------------


def blocks_kernel_fn(blocks: dict, x_train, x_test, nngp_is_ntk: bool = False):
    """A kernel_fn(x1, x2, get) for NT's predict that returns the stored blocks."""

    def which(x):
        if x is None:
            return None
        for name, ref in (("train", x_train), ("test", x_test)):
            if np.shape(x) == np.shape(ref) and np.array_equal(np.asarray(x), ref):
                return name
        raise ValueError("unknown x")

    pair_of = {("train", None): "train_train", ("test", "train"): "test_train",
               ("test", None): "test_test"}

    def fn(x1, x2=None, get=None, **kwargs):
        pair = pair_of[(which(x1), which(x2))]

        def one(g):
            src = "ntk" if (nngp_is_ntk and g == "nngp") else g
            return jnp.asarray(blocks[f"{src}_{pair}"])

        if isinstance(get, str):
            return one(get)
        get = tuple(get)
        return collections.namedtuple("Kernel", get)(*[one(g) for g in get])

    return fn


def nt_max_learning_rate(ntk_dd, y_size) -> float:
    # NT's CPU branch calls scipy.linalg.eigvalsh(eigvals=...), removed from SciPy >= 1.14;
    # take NT's own non-CPU branch (jnp.linalg.eigvalsh) of the same function instead.
    saved = nt_predict._is_on_cpu
    nt_predict._is_on_cpu = lambda x: False
    try:
        return float(nt.predict.max_learning_rate(jnp.asarray(ntk_dd), y_size))
    finally:
        nt_predict._is_on_cpu = saved


def nt_predict_case(blocks, x_train, x_test, y, mode, t, lr, diag_reg, absolute, cov):
    """NT's answer: (mean, cov or None, oracle description)."""
    if mode == "ntkgp" and t is None:
        kdd = collections.namedtuple("Kernel", KERNELS)(
            *[jnp.asarray(blocks[f"{g}_train_train"]) for g in KERNELS])
        ktd = collections.namedtuple("Kernel", KERNELS)(
            *[jnp.asarray(blocks[f"{g}_test_train"]) for g in KERNELS])
        ktt = (collections.namedtuple("Kernel", KERNELS)(
            *[jnp.asarray(blocks[f"{g}_test_test"]) for g in KERNELS]) if cov else None)
        fn = nt.predict.gp_inference(kdd, jnp.asarray(y), diag_reg, absolute)
        out = fn(get="ntkgp", k_test_train=ktd, k_test_test=ktt)
        oracle = "nt.predict.gp_inference(get='ntkgp')"
        mean, c = (out.mean, out.covariance) if cov else (out, None)
        # Cross-check: the extension's definition agrees with gp_inference at t=inf.
        m2, c2 = nt_predict_case(blocks, x_train, x_test, y, "ntkgp_ext", None, lr, diag_reg,
                                 absolute, cov)[:2]
        np.testing.assert_allclose(m2, mean, rtol=1e-9, atol=1e-12)
        if cov:
            np.testing.assert_allclose(c2, c, rtol=1e-9, atol=1e-12)
        return np.asarray(mean), (None if c is None else np.asarray(c)), oracle

    swap = mode in ("ntkgp", "ntkgp_ext")
    get = "nngp" if swap else mode
    kfn = blocks_kernel_fn(blocks, x_train, x_test, nngp_is_ntk=swap)
    pred = nt.predict.gradient_descent_mse_ensemble(
        kfn, x_train, jnp.asarray(y), learning_rate=lr, diag_reg=diag_reg,
        diag_reg_absolute_scale=absolute)
    out = pred(t, x_test, get=get, compute_cov=cov)
    oracle = ("nt.predict.gradient_descent_mse_ensemble(get='nngp') with NNGP := NTK"
              if swap else f"nt.predict.gradient_descent_mse_ensemble(get={mode!r})")
    mean, c = (out.mean, out.covariance) if cov else (out, None)
    return np.asarray(mean), (None if c is None else np.asarray(c)), oracle


def kernel_blocks(kernel_fn, x_train, x_test) -> dict:
    out = {}
    for pair, (a, b) in zip(PAIRS, ((x_train, None), (x_test, x_train), (x_test, None))):
        k = kernel_fn(a, b, KERNELS)
        for g in KERNELS:
            out[f"{g}_{pair}"] = np.asarray(getattr(k, g), dtype=np.float64)
    return out


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def t_value(kind: str, tlist):
    return {"none": None, "scalar": T_SCALAR, "list": list(tlist)}[kind]


def make_cases():
    rng = np.random.default_rng(20240611)
    data = {}
    for name, a in ARCHS.items():
        x_train = rng.standard_normal((a["n_train"],) + a["x_shape"])
        x_test = rng.standard_normal((a["n_test"],) + a["x_shape"])
        ys = {k: rng.standard_normal((a["n_train"], k)) for k in (1, 3)}
        data[name] = (x_train, x_test, ys)

    cases = []
    for arch in ARCHS:
        for regime in ("rel", "abs"):
            for k in (1, 3):
                for mode in MODES:
                    for tk in ("none", "scalar", "list"):
                        cases.append(dict(arch=arch, regime=regime, k=k, mode=mode, t_kind=tk,
                                          cov=True, e2e=(k == 3)))
        for mode in MODES:
            for tk in ("none", "scalar", "list"):
                cases.append(dict(arch=arch, regime="rel", k=3, mode=mode, t_kind=tk, cov=False,
                                  e2e=False))
    for mode in MODES:
        for tk in ("none", "scalar", "list"):
            cases.append(dict(arch="fc", regime="zero", k=1, mode=mode, t_kind=tk, cov=True,
                              e2e=False))
    return data, cases


def synthetic_not_pd(rng):
    """PSD joint kernels whose train-train NNGP and NTK blocks are then pushed indefinite."""
    n, m, d = 7, 3, 12
    out = {}
    for g, scale in (("nngp", 1.0), ("ntk", 2.0)):
        f = rng.standard_normal((n + m, d))
        full = scale * f @ f.T / d + 0.05 * np.eye(n + m)
        dd = full[:n, :n].copy()
        w, v = np.linalg.eigh(dd)
        dd = dd - (w[0] + 0.3) * np.outer(v[:, 0], v[:, 0])   # smallest eigenvalue -> -0.3
        out[f"{g}_train_train"] = 0.5 * (dd + dd.T)
        out[f"{g}_test_train"] = full[n:, :n]
        out[f"{g}_test_test"] = full[n:, n:]
    y = rng.standard_normal((n, 2))
    x_train = np.arange(n, dtype=np.float64)[:, None]
    x_test = 100.0 + np.arange(m, dtype=np.float64)[:, None]
    return out, y, x_train, x_test


def save(name, arrays, desc, index):
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT_DIR / f"{name}.npz", **arrays)
    index[name] = desc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="only cases whose name contains this")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)

    data, cases = make_cases()
    names = [f"{c['arch']}_{c['mode']}_{c['regime']}_k{c['k']}_t{c['t_kind']}_"
             f"{'cov' if c['cov'] else 'mean'}" for c in cases]
    names += [f"synthetic_notpd_{mode}_{tk}" for mode in ("ntk", "nngp")
              for tk in ("tnone", "tlist")]
    if args.list:
        print("\n".join(names))
        return 0

    blocks = {}
    for arch, a in ARCHS.items():
        x_train, x_test, ys = data[arch]
        blocks[arch] = kernel_blocks(to_stax(a["spec"])[2], x_train, x_test)

    # Sanity: NT's ensemble on the stored blocks == NT's ensemble on its own kernel_fn.
    for arch, a in ARCHS.items():
        x_train, x_test, ys = data[arch]
        for mode in ("ntk", "nngp"):
            for t in (None, [0.5, 50.0]):
                ref = nt.predict.gradient_descent_mse_ensemble(
                    to_stax(a["spec"])[2], x_train, jnp.asarray(ys[3]), learning_rate=0.5,
                    diag_reg=1e-3)(t, x_test, get=mode, compute_cov=True)
                m, c, _ = nt_predict_case(blocks[arch], x_train, x_test, ys[3], mode, t, 0.5,
                                          1e-3, False, True)
                np.testing.assert_allclose(m, ref.mean, rtol=1e-10, atol=1e-13)
                np.testing.assert_allclose(c, ref.covariance, rtol=1e-10, atol=1e-13)

    index = {}
    if (OUT_DIR / "INDEX.json").exists() and args.only:
        index = json.loads((OUT_DIR / "INDEX.json").read_text())
    for c, name in zip(cases, names):
        if args.only and args.only not in name:
            continue
        a = ARCHS[c["arch"]]
        x_train, x_test, ys = data[c["arch"]]
        y = ys[c["k"]]
        diag_reg, absolute, lr, tlist = REGIMES[c["regime"]]
        t = t_value(c["t_kind"], tlist)
        mean, cov, oracle = nt_predict_case(blocks[c["arch"]], x_train, x_test, y, c["mode"], t,
                                            lr, diag_reg, absolute, c["cov"])
        arrays = dict(blocks[c["arch"]])
        meta = dict(kernel=c["mode"], t_kind=c["t_kind"], t=t, learning_rate=lr,
                    diag_reg=diag_reg, diag_reg_absolute_scale=absolute, compute_cov=c["cov"],
                    oracle=oracle, e2e=c["e2e"], expect_nan=False, spec=a["spec"],
                    max_learning_rate=nt_max_learning_rate(blocks[c["arch"]]["ntk_train_train"],
                                                           y.size))
        arrays.update(y_train=y, mean=mean, meta=np.array(json.dumps(meta)))
        if c["e2e"]:
            arrays.update(x_train=x_train, x_test=x_test)
        if cov is not None:
            arrays["covariance"] = cov
        assert np.isfinite(mean).all() and (cov is None or np.isfinite(cov).all()), name
        save(name, arrays, f"{a['desc']}; {c['mode']}, t={t}, lr={lr}, diag_reg={diag_reg}"
             f"{' (absolute)' if absolute else ' (relative)'}, k={c['k']}, "
             f"compute_cov={c['cov']}; oracle: {oracle}", index)

    rng = np.random.default_rng(7)
    sblocks, y, x_train, x_test = synthetic_not_pd(rng)
    for mode in ("ntk", "nngp"):
        for tk, t in (("tnone", None), ("tlist", [0.0, 0.5, 5.0, 50.0])):
            name = f"synthetic_notpd_{mode}_{tk}"
            if args.only and args.only not in name:
                continue
            mean, cov, oracle = nt_predict_case(sblocks, x_train, x_test, y, mode, t, 1.0, 0.0,
                                                False, True)
            expect_nan = bool(np.isnan(mean).any() or np.isnan(cov).any())
            assert expect_nan == (t is None), (name, expect_nan)
            arrays = dict(sblocks)
            meta = dict(kernel=mode, t_kind="none" if t is None else "list", t=t,
                        learning_rate=1.0, diag_reg=0.0, diag_reg_absolute_scale=False,
                        compute_cov=True, oracle=oracle, e2e=False, expect_nan=expect_nan,
                        spec=None, max_learning_rate=nt_max_learning_rate(
                            sblocks["ntk_train_train"], y.size))
            arrays.update(y_train=y, mean=mean, covariance=cov, meta=np.array(json.dumps(meta)))
            save(name, arrays, f"synthetic kernels, train-train blocks indefinite (lambda_min="
                 f"-0.3); {mode}, t={t}, diag_reg=0; NT {'returns NaN' if expect_nan else 'clips negative eigenvalues'}; oracle: {oracle}", index)

    (OUT_DIR / "INDEX.json").write_text(json.dumps(dict(sorted(index.items())), indent=1) + "\n")
    size = sum(p.stat().st_size for p in OUT_DIR.iterdir())
    print(f"{len(index)} cases in {OUT_DIR} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
