#!/usr/bin/env python3
"""Handwritten digits (scikit-learn's 8×8 digits) classified by infinitely wide networks.

    python3 bench/digits.py [--depth 3] [--diag-reg 1e-4] [--train 1200] [--seed 0]
    NT_PYTHON=/tmp/nt/bin/python python3 bench/digits.py      # next to neural-tangents

The 1797 images (64 pixels, 10 classes) are split at random into ``--train`` training and the
rest test images; pixels are standardized with the training split's mean and sd. Labels become
centered one-hot targets (``predict.one_hot_targets``: one_hot − 1/10), the model is FC-depth
(depth × (Dense(512, w_std=1.5, b_std=0.05) + Relu), then Dense(10)), and the prediction is the
t = ∞ mean of ``gradient_descent_mse_ensemble``: the NTK mode (the ensemble of infinitely wide
networks trained to convergence) and the NNGP mode (the Bayesian posterior mean), each with
``diag_reg`` relative to the mean diagonal of the kernel. The predicted class is the argmax of the
mean (``predict.labels_from_mean``).

Each engine runs in a fresh worker process of bench/harness.py (ours: bench/ours_worker.py;
neural-tangents: bench/nt_worker.py under $NT_PYTHON, float64 via jax_enable_x64), on the same
arrays, with the same model and diag_reg. ``first`` is the whole first call (NT: building and
jit-compiling its kernel_fn included), ``steady`` a second call of the same function, each the
median of ``--reps`` repetitions. The table gives test accuracy and times of each, and the
largest relative difference of the two means.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import harness  # noqa: E402
from ntk.engine.predict import labels_from_mean, one_hot_targets  # noqa: E402

CLASSES = 10
MODES = ("ntk", "nngp")


def split(train: int, seed: int):
    x, labels = load_digits(return_X_y=True)
    x_train, x_test, l_train, l_test = train_test_split(x, labels, train_size=train, random_state=seed,
                                                        stratify=labels)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), l_train, scaler.transform(x_test), l_test


def run_engine(label: str, python: str, script: str, env: dict, wire: dict, save: str,
               reps: int, timeout: float) -> dict:
    """One harness worker: set the case up, run it ``reps`` times (each a first call and a steady
    one), save the first mean; times are medians over the repetitions."""
    worker = harness.Worker(label, python, script, env)
    try:
        worker.request({"op": "setup", "case": wire}, timeout)
        answers = [worker.request({"op": "run", "save": save if rep == 0 else None}, timeout)
                   for rep in range(reps)]
    finally:
        worker.close()
    with np.load(save) as saved:
        mean = saved["mean"]
    return {"first_s": harness.median([a["first_s"] for a in answers]),
            "steady_s": harness.median([s for a in answers for s in a["steady_s"]]), "mean": mean}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--diag-reg", type=float, default=1e-4)
    ap.add_argument("--train", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3, help="repetitions per engine (medians reported)")
    ap.add_argument("--device", default="cpu", help="our engine's device")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one worker call may take")
    args = ap.parse_args()

    x_train, l_train, x_test, l_test = split(args.train, args.seed)
    y_train = one_hot_targets(l_train, CLASSES).numpy()
    spec = harness.fc_spec(args.depth, outputs=CLASSES)
    nt_python = os.environ.get("NT_PYTHON") or None
    print(f"digits: {len(x_train)} train / {len(x_test)} test images, 64 pixels, {CLASSES} classes; "
          f"FC-{args.depth} ReLU, t = ∞, diag_reg {args.diag_reg:g} (relative), float64")
    if not nt_python:
        print("notice: NT_PYTHON is not set: our engine only")

    rows = []
    with tempfile.TemporaryDirectory(prefix="ntk-digits-") as workdir:
        paths = {}
        for name, array in (("x1", x_train), ("x_test", x_test), ("y_train", y_train)):
            paths[name] = os.path.join(workdir, f"{name}.npy")
            np.save(paths[name], array)
        for mode in MODES:
            case = harness.Case(f"digits-{mode}", "predict", spec, len(x_train), (64,),
                                n_test=len(x_test), outputs=CLASSES, t=None, diag_reg=args.diag_reg,
                                compute_cov=False, solve_only=False)
            wire = harness.wire_case(case, paths, args.device)
            wire["predict"]["kernel"] = mode
            engines = {"ours": (sys.executable, "ours_worker.py", {})}
            if nt_python:
                engines["NT"] = (nt_python, "nt_worker.py",
                                 {"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})
            results = {}
            for label, (python, script, env) in engines.items():
                print(f"running {mode} on {label} ...", flush=True)
                results[label] = run_engine(label, python, script, env, wire,
                                            os.path.join(workdir, f"{mode}-{label}.npz"), args.reps,
                                            args.timeout)
                predicted = labels_from_mean(results[label]["mean"]).numpy()
                results[label]["accuracy"] = float(np.mean(predicted == l_test))
            rows.append((mode, results))

    head = f"{'mode':<5} {'engine':<6} {'test accuracy':>13} {'first':>9} {'steady':>9}"
    print()
    print(head)
    print("-" * len(head))
    for mode, results in rows:
        for label, r in results.items():
            print(f"{mode:<5} {label:<6} {r['accuracy']:>13.4f} {harness.fmt_s(r['first_s']):>9} "
                  f"{harness.fmt_s(r['steady_s']):>9}")
        if "NT" in results:
            ours, nt = results["ours"], results["NT"]
            print(f"{'':<5} ours/NT time: first {ours['first_s'] / nt['first_s']:.3f}, steady "
                  f"{ours['steady_s'] / nt['steady_s']:.3f}; max relative difference of the means "
                  f"{harness.rel_err(ours['mean'], nt['mean']):.1e}")


if __name__ == "__main__":
    main()
