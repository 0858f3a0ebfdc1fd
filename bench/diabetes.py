#!/usr/bin/env python3
"""Diabetes progression (scikit-learn's diabetes data) regressed by infinitely wide networks,
with calibrated uncertainty.

    python3 bench/diabetes.py [--depth 2] [--train 300] [--seed 0]

The 442 patients (10 features; target: disease progression a year later) are split at random
into ``--train`` training and the rest test patients. Features and target are standardized with
the training split's mean and sd. The model is FC-depth ReLU (depth × (Dense(512, w_std=1.5,
b_std=0.05) + Relu), then Dense(1)), and two t = ∞ predictions of the engine are scored:

* NNGP posterior (``kernel="nngp"``): the Bayesian posterior of the infinitely wide network
  given noisy observations y = f(x) + ε, ε ~ N(0, σ²) (Lee et al. 2018; Rasmussen & Williams
  2006, eqs. (2.22)-(2.24)): ``diag_reg = σ²`` is exactly the noise variance.
* NTK ensemble (``kernel="ntk"``): the mean and covariance, over initializations, of infinitely
  wide networks trained to convergence (Lee et al. 2019, eq. (16)), with the same ``diag_reg``
  (a ridge on the NTK: without it the networks would interpolate the noisy training targets).

Observation noise. The covariance of either prediction is that of f(x), the network's output;
a test target also carries ε, so the predictive interval for y is μ ± z·√(σ_f² + σ²). σ² and an
output scale a (the network's output multiplied by √a, which multiplies both kernels by a) are
chosen by maximizing the NNGP marginal likelihood of the training targets,
log N(y | 0, a·K_dd + σ² I), on a grid; the NTK ensemble uses the same a and σ². The prior is
fitted to the training split only: the test split is touched once, for the figures below.

Figures: RMSE on the test split (in the target's units, next to a linear least-squares fit and to
predicting the training mean), and the empirical coverage of the central 68% (z = 1) and 95%
(z = 1.96) intervals, for y (noise included, the calibrated claim) and for f alone (noise left
out, which must under-cover noisy targets).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import harness  # noqa: E402
from ntk.engine import kernel_fn  # noqa: E402
from ntk.engine.predict import factorize, predict  # noqa: E402

LEVELS = ((0.68, 1.0), (0.95, 1.96))


def split(train: int, seed: int):
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, train_size=train, random_state=seed)
    features = StandardScaler().fit(x_train)
    target = StandardScaler().fit(y_train[:, None])
    return (features.transform(x_train), target.transform(y_train[:, None]),
            features.transform(x_test), target.transform(y_test[:, None]), float(target.scale_[0]))


def fit_prior(k_dd: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, σ²) maximizing log N(y | 0, a·K + σ² I) (Rasmussen & Williams 2006, eq. (2.30)) on a
    log grid; targets are standardized, so both live within a few decades of 1.

    With K = U diag(s) Uᵀ the log likelihood is −½ Σ_i [(Uᵀy)_i² / (a s_i + σ²) + log(a s_i + σ²)]
    − (n/2) log 2π: one eigendecomposition serves the whole grid.
    """
    s, u = np.linalg.eigh(k_dd)
    projected = (u.T @ y).ravel() ** 2
    scales = np.logspace(-3, 3, 241)[:, None, None]
    noises = np.logspace(-4, 1, 201)[None, :, None]
    var = scales * np.clip(s, 0, None) + noises
    log_lik = -0.5 * (projected / var + np.log(var)).sum(axis=-1)
    i, j = np.unravel_index(np.argmax(log_lik), log_lik.shape)
    return float(scales[i, 0, 0]), float(noises[0, j, 0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    x_train, y_train, x_test, y_test, units = split(args.train, args.seed)
    spec = harness.fc_spec(args.depth)
    k_dd = kernel_fn(spec, x_train, device="cpu")
    k_td = kernel_fn(spec, x_test, x_train, device="cpu")
    k_tt = kernel_fn(spec, x_test, device="cpu")
    scale, noise = fit_prior(k_dd["nngp"].numpy(), y_train)
    print(f"diabetes: {len(x_train)} train / {len(x_test)} test patients, 10 features; FC-{args.depth} "
          f"ReLU, t = ∞, float64")
    print(f"fitted by NNGP marginal likelihood on the training split: output scale a = {scale:.3g}, "
          f"noise σ² = {noise:.3g} (standardized units; diag_reg = σ²/a on the unscaled kernels, "
          f"absolute)")

    rmse = lambda pred: units * float(np.sqrt(np.mean((pred - y_test) ** 2)))
    design = np.c_[x_train, np.ones(len(x_train))]
    coef = np.linalg.lstsq(design, y_train, rcond=None)[0]
    print(f"baselines: RMSE of the training mean {rmse(np.zeros_like(y_test)):.2f}, of linear least "
          f"squares {rmse(np.c_[x_test, np.ones(len(x_test))] @ coef):.2f} (target units)")

    head = (f"{'prediction':<15} {'RMSE':>7} {'mean sd(f)':>10} {'sd(y)':>7} "
            + " ".join(f"{f'cover {int(p * 100)}% y':>13}" for p, _ in LEVELS) + " "
            + " ".join(f"{f'cover {int(p * 100)}% f':>13}" for p, _ in LEVELS))
    print(head)
    print("-" * len(head))
    for mode, label in (("nngp", "NNGP posterior"), ("ntk", "NTK ensemble")):
        # Kernels a·K, a·Θ with absolute ridge σ² equal the unscaled kernels with ridge σ²/a,
        # the mean unchanged and the covariance multiplied by a.
        fact = factorize(k_dd, mode, diag_reg=noise / scale, diag_reg_absolute_scale=True)
        out = predict(fact, y_train, k_td, k_tt, kernel=mode, t=None)
        mean = out.mean.numpy()
        var_f = scale * out.variance.numpy()[:, None]
        sd_y = np.sqrt(var_f + noise)
        cover_y = [np.mean(np.abs(y_test - mean) <= z * sd_y) for _, z in LEVELS]
        cover_f = [np.mean(np.abs(y_test - mean) <= z * np.sqrt(var_f)) for _, z in LEVELS]
        print(f"{label:<15} {rmse(mean):>7.2f} {units * float(np.sqrt(var_f).mean()):>10.2f} "
              f"{units * float(sd_y.mean()):>7.2f} "
              + " ".join(f"{c:>13.3f}" for c in cover_y) + " "
              + " ".join(f"{c:>13.3f}" for c in cover_f))
    print(f"(coverage of {len(y_test)} test targets; sampling sd of a coverage near 68% / 95%: "
          + " / ".join(f"{np.sqrt(p * (1 - p) / len(y_test)):.3f}" for p, _ in LEVELS) + ")")


if __name__ == "__main__":
    main()
