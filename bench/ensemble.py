#!/usr/bin/env python3
"""Trained finite ensembles against the infinite-width prediction, across widths.

    python3 bench/ensemble.py [--members 256] [--widths 4,8,16,64,256,1024] [--seed 0]
                              [--out bench/figures/ensemble.png]

For each width, ``members`` one-hidden-layer ReLU networks (NTK parameterization, initialized as
neural-tangents' stax) are trained by full-batch gradient descent on MSE on 8 points of the
8-dimensional sphere (``trained_ensembles``: the experiment, its time convention and its
statistics are documented there), and their outputs on 6 test points, early in training, midway
and near convergence, are scored against ``predict(kernel="ntk")``:

* ``z mean``, ``z var``: (ensemble mean − μ) / (σ/√S) and the χ² score of the sample variance,
  both standard normal when the prediction is right; ``max|z|`` over test points is judged
  against the Bonferroni threshold of all the scores of one width (α = 1%);
* ``mean χ²``: S (m̂ − μ)ᵀ Σ⁻¹ (m̂ − μ) over the 6 test points together, χ²(6) under the
  prediction (their correlations accounted for), and its p-value;
* ``var ratio``: ensemble variance / predicted variance (1 ± √(2/(S−1)) by sampling alone).

The figure: the largest scores and the variance ratios against width (the finite-width error,
and where it sinks below the sampling error), and for the widest ensemble its mean and variance
against the prediction at each test point and time, with sampling error bars.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from ntk.engine import kernel_fn  # noqa: E402
from trained_ensembles import critical_z, experiment, one_hidden_layer, schedule, sphere_problem  # noqa: E402

ALPHA = 0.01


def run(widths, members, seed, device):
    x_train, y_train, x_test = sphere_problem()
    # The analytic NTK, hence the step size and the checkpoints, are the same at every width.
    ntk = kernel_fn(one_hidden_layer(1), x_train, get=("ntk",))["ntk"]
    plan = schedule(ntk, y_train.size)
    results, seconds = {}, {}
    for width in widths:
        start = time.perf_counter()
        results[width] = experiment(one_hidden_layer(width), x_train, y_train, x_test,
                                    members=members, seed=seed, plan=plan, device=device)
        seconds[width] = time.perf_counter() - start
    return plan, results, seconds


def checkpoint_names(plan) -> list[str]:
    """The schedule's checkpoint names in the order of their step counts (the runs' order)."""
    return sorted(plan.steps, key=plan.steps.get)


def print_tables(plan, results, seconds, members):
    widest = results[max(results)]
    print(f"gradient descent: step size η = {plan.learning_rate:.5g} (η λ_max / n = 0.05), "
          f"checkpoints {plan.steps} = predict(t=steps, learning_rate=η)")
    drift = (widest.prediction.mean[-1] - widest.prediction_at_infinity.mean).abs().max()
    print(f"predicted mean at the large t vs t = ∞: max |Δ| = {float(drift):.3g} "
          f"(max |μ_∞| = {float(widest.prediction_at_infinity.mean.abs().max()):.3g})")
    tests = next(iter(results.values())).agreement.tests
    print(f"{members} networks per width; scores are N(0, 1) under the prediction; Bonferroni "
          f"thresholds for the {tests} tests of a width at α = {ALPHA:g}: |z| ≤ "
          f"{critical_z(tests, ALPHA):.2f}, χ² p ≥ {ALPHA / tests:.1e}; variance ratio sampling sd "
          f"{np.sqrt(2 / (members - 1)):.3f}")
    head = (f"{'width':>6} {'t':>6} {'steps':>5} {'max|z| mean':>11} {'max|z| var':>10} "
            f"{'mean χ²(M) (p)':>15} {'var ratio mean [min, max]':>26} {'train loss':>10} {'time':>6}")
    print(head)
    print("-" * len(head))
    for width, exp in results.items():
        a = exp.agreement
        for i, (name, step) in enumerate(zip(checkpoint_names(plan), exp.run.steps)):
            ratio = a.variance_ratio[i]
            chi2 = f"{float(a.mean_chi2[i, 0]):.1f} ({float(a.mean_p[i, 0]):.2g})"
            print(f"{width:>6} {name:>6} {step:>5} {float(a.z_mean[i].abs().max()):>11.2f} "
                  f"{float(a.z_variance[i].abs().max()):>10.2f} {chi2:>15} "
                  f"{float(ratio.mean()):>10.3f} [{float(ratio.min()):.3f}, {float(ratio.max()):.3f}] "
                  f"{float(exp.run.train_loss[i].mean()):>10.2e} "
                  f"{f'{seconds[width]:.0f}s' if i == 0 else '':>6}")
        verdict = "within" if a.consistent(ALPHA) else "REJECTED beyond"
        print(f"{'':>6} all times: max |z| {a.max_abs_z():.2f}, smallest χ² p "
              f"{float(a.mean_p.min()):.2g}: {verdict} sampling error")


def plot(plan, results, members, out):
    widths = sorted(results)
    fig, ax = plt.subplots(2, 2, figsize=(11, 8.5))

    a = ax[0, 0]
    agreements = [results[w].agreement for w in widths]
    a.plot(widths, [float(g.z_mean.abs().max()) for g in agreements], "o-", label="mean")
    a.plot(widths, [float(g.z_variance.abs().max()) for g in agreements], "s-", label="variance")
    a.axhline(critical_z(agreements[0].tests, ALPHA), color="k", lw=0.8, ls="--",
              label=f"Bonferroni threshold, α = {ALPHA:g}")
    a.set_xscale("log", base=2)
    a.set_xlabel("width")
    a.set_ylabel("max |z| over test points and times")
    a.set_title(f"Ensemble vs prediction, {members} networks per width")
    a.legend()

    a = ax[0, 1]
    names = checkpoint_names(plan)
    for i, name in enumerate(names):
        a.plot(widths, [float(results[w].agreement.variance_ratio[i].mean()) for w in widths],
               "o-", label=f"t {name}")
    band = 2 * np.sqrt(2 / (members - 1))
    a.axhspan(1 - band, 1 + band, color="0.85", label="±2 sd of one ratio")
    a.axhline(1.0, color="k", lw=0.8)
    a.set_xscale("log", base=2)
    a.set_xlabel("width")
    a.set_ylabel("ensemble variance / predicted (mean over test points)")
    a.legend()

    exp = results[widths[-1]]
    outputs = exp.run.test_outputs[..., 0].cpu().numpy()      # (T, S, M)
    mu = exp.prediction.mean[..., 0].cpu().numpy()             # (T, M)
    var = exp.prediction.variance.cpu().numpy()                # (T, M)
    dof = members - 1
    lo, hi = stats.chi2.ppf([0.025, 0.975], dof) / dof
    for i, name in enumerate(names):
        ax[1, 0].errorbar(mu[i], outputs[i].mean(0), yerr=2 * np.sqrt(var[i] / members), fmt="o",
                          capsize=2, label=f"t {name} (step {exp.run.steps[i]})")
        sample_var = outputs[i].var(0, ddof=1)
        # 95% confidence interval of the variance from S samples: [s²/hi, s²/lo].
        ax[1, 1].errorbar(var[i], sample_var, yerr=[sample_var - sample_var / hi,
                                                    sample_var / lo - sample_var],
                          fmt="o", capsize=2, label=f"t {name}")
    for a, what in ((ax[1, 0], "mean"), (ax[1, 1], "variance")):
        lim = np.array(a.get_xlim() + a.get_ylim())
        a.plot([lim.min(), lim.max()], [lim.min(), lim.max()], "k", lw=0.8)
        a.set_xlabel(f"predicted {what} (infinite width)")
        a.set_ylabel(f"ensemble {what}, width {widths[-1]}")
        a.legend(fontsize=8)
    ax[1, 0].set_title("error bars: ±2 standard errors")
    ax[1, 1].set_title("error bars: 95% χ² interval")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"figure: {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=256)
    ap.add_argument("--widths", default="4,8,16,64,256,1024")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.path.join(HERE, "figures", "ensemble.png"))
    args = ap.parse_args()
    widths = sorted(int(w) for w in args.widths.split(","))
    plan, results, seconds = run(widths, args.members, args.seed, args.device)
    print_tables(plan, results, seconds, args.members)
    plot(plan, results, args.members, args.out)


if __name__ == "__main__":
    main()
