"""Trained finite ensembles against the infinite-width prediction (bench/trained_ensembles.py).

The slow tests (``-m slow``; ``-s`` prints the figures) are the central claim of the predict
module: 256 networks of width 1024, trained by gradient descent on MSE, have the output mean and
variance that ``predict(kernel="ntk")`` gives, within sampling error, early in training, midway
and near convergence; at width 8 the same test rejects the prediction. The fast tests pin the
machinery: the members are the Monte Carlo networks, a step is a gradient-descent step on
L(θ) = ‖f(X) − Y‖² / (2n), and the scores are standard normal when the prediction is right.

The decision rule is Bonferroni's (``Agreement.consistent``): the prediction stands when every
mean and variance score, at every time and test point, lies within ±z*, z* = Φ⁻¹(1 − α/2m), and
every time's χ² of the mean has p ≥ α/m, for the m = 52 tests and α = 1%: a correct prediction
fails with probability ≤ 1% whatever the correlations of the tests. At width 8 the variance falls
20-40% short of the prediction (the outputs of so narrow a network are far from Gaussian and its
NTK far from deterministic): over eight seeds the largest score was 5-6.3, against z* = 3.73,
so that rejection is no fluke of the seed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from trained_ensembles import (compare, critical_z, experiment, one_hidden_layer, schedule, sphere_problem,
                               train_ensemble)

from ntk.engine import kernel_fn
from ntk.engine.monte_carlo import sample_seed
from ntk.engine.networks import build_network
from ntk.engine.predict import max_learning_rate

MEMBERS = 256
WIDE, NARROW = 1024, 8
ALPHA = 0.01


def _report(width, exp, seconds):
    a = exp.agreement
    print(f"\nwidth {width}, {a.members} members, lr {exp.run.learning_rate:.4g}, {seconds:.0f} s; "
          f"critical |z| {critical_z(a.tests, ALPHA):.2f}, critical p {ALPHA / a.tests:.1e}")
    for i, step in enumerate(exp.run.steps):
        print(f"  step {step:5d}: max |z| mean {float(a.z_mean[i].abs().max()):.2f}, variance "
              f"{float(a.z_variance[i].abs().max()):.2f}; χ² of the mean {float(a.mean_chi2[i, 0]):.1f} "
              f"(p {float(a.mean_p[i, 0]):.2g}); variance ratio "
              f"{float(a.variance_ratio[i].min()):.2f}..{float(a.variance_ratio[i].max()):.2f}; "
              f"train loss {float(exp.run.train_loss[i].mean()):.2e}")


def _experiment(width):
    x_train, y_train, x_test = sphere_problem()
    start = time.perf_counter()
    exp = experiment(one_hidden_layer(width), x_train, y_train, x_test, members=MEMBERS, seed=0)
    _report(width, exp, time.perf_counter() - start)
    return exp


@pytest.mark.slow
def test_wide_ensemble_matches_the_predicted_gaussian_at_small_medium_and_large_t():
    exp = _experiment(WIDE)
    a = exp.agreement
    assert len(exp.run.steps) == 4
    assert a.consistent(ALPHA)
    # "Large" is near convergence: the training loss has fallen 100-fold and the predicted mean
    # is within a few percent of its t = ∞ value.
    loss = exp.run.train_loss.mean(dim=1)
    assert loss[-1] < 0.01 * loss[0]
    drift = (exp.prediction.mean[-1] - exp.prediction_at_infinity.mean).abs().max()
    assert drift < 0.05 * exp.prediction_at_infinity.mean.abs().max()


@pytest.mark.slow
def test_narrow_ensemble_is_rejected():
    a = _experiment(NARROW).agreement
    assert not a.consistent(ALPHA)
    assert a.max_abs_z() > critical_z(a.tests, ALPHA)
    assert float(a.variance_ratio.mean()) < 0.9


# -- the machinery (fast) ---------------------------------------------------------------------


def test_members_are_the_monte_carlo_networks_and_steps_are_gradient_descent():
    spec = one_hidden_layer(16)
    x_train, y_train, x_test = sphere_problem(n_train=5, n_test=3, dim=4)
    lr, members, seed = 0.05, 3, 7
    run = train_ensemble(spec, x_train, y_train, x_test, members=members, learning_rate=lr,
                         steps=[2, 0], seed=seed)
    assert run.steps == (0, 2) and run.test_outputs.shape == (2, members, 3, 1)
    x = torch.as_tensor(x_train)
    y = torch.as_tensor(y_train)
    for i in range(members):
        net = build_network(spec, (4,), seed=sample_seed(seed, i))
        torch.testing.assert_close(run.test_outputs[0, i], net(torch.as_tensor(x_test)).detach())
        for _ in range(2):  # θ ← θ − η ∇ ‖f(X) − Y‖² / (2n), one network at a time
            loss = 0.5 * (net(x) - y).square().sum() / y.numel()
            grads = torch.autograd.grad(loss, list(net.parameters()))
            with torch.no_grad():
                for p, g in zip(net.parameters(), grads):
                    p -= lr * g
        with torch.no_grad():
            torch.testing.assert_close(run.test_outputs[1, i], net(torch.as_tensor(x_test)))
            torch.testing.assert_close(run.train_loss[1, i],
                                       0.5 * (net(x) - y).square().sum() / y.numel())


def test_schedule_spans_the_spectrum_of_the_train_ntk():
    x_train, y_train, _ = sphere_problem()
    ntk = kernel_fn(one_hidden_layer(1), x_train, get=("ntk",))["ntk"]
    evals = torch.linalg.eigvalsh(ntk)
    plan = schedule(ntk, y_train.size, mode_step=0.05, settle=4.0)
    n = y_train.size
    assert plan.learning_rate == pytest.approx(0.025 * max_learning_rate(ntk, n))
    assert plan.learning_rate * float(evals[-1]) / n == pytest.approx(0.05)
    init, small, medium, large = (plan.steps[name] for name in ("init", "small", "medium", "large"))
    assert init == 0 and small == 20 and small < medium < large
    assert plan.learning_rate * large * float(evals[0]) / n == pytest.approx(4.0, rel=0.01)


def test_scores_are_standard_normal_for_samples_of_the_predicted_gaussian():
    rng = np.random.default_rng(0)
    members, points = 200, 2000
    mean = rng.normal(size=(points, 1))
    variance = rng.uniform(0.1, 3.0, size=points)
    samples = mean + np.sqrt(variance)[:, None] * rng.standard_normal((members, points, 1))
    covariance = torch.diag(torch.as_tensor(variance))
    a = compare(torch.as_tensor(samples), torch.as_tensor(mean), covariance)
    for z in (a.z_mean, a.z_variance):
        assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.06
    assert a.consistent(ALPHA)
    # χ²(2000): mean 2000, sd √4000 ≈ 63.
    assert abs(float(a.mean_chi2) - points) < 4 * math.sqrt(2 * points) and float(a.mean_p) > 1e-4
    # A variance 30% short is many sampling errors away at 200 members.
    short = compare(torch.as_tensor(samples) * math.sqrt(0.7), torch.as_tensor(mean) * math.sqrt(0.7),
                    covariance)
    assert float(short.z_variance.median()) < -3


def test_mean_chi2_accounts_for_correlated_test_points():
    """Outputs at two nearly identical points: one common shift is one standard error, not two."""
    members = 100
    covariance = torch.tensor([[1.0, 0.999], [0.999, 1.0]], dtype=torch.float64)
    outputs = torch.zeros((members, 2, 1), dtype=torch.float64)
    outputs[: members // 2] += 1.0
    outputs[members // 2:] -= 1.0
    shift = 1.0 / math.sqrt(members)               # one standard error, at both points
    a = compare(outputs + shift, torch.zeros((2, 1), dtype=torch.float64), covariance)
    torch.testing.assert_close(a.z_mean, torch.ones((2, 1), dtype=torch.float64))
    assert float(a.mean_chi2) == pytest.approx(2 / 1.999)   # 1ᵀΣ⁻¹1 = 2 / (1 + ρ)


def test_divergent_learning_rate_is_reported():
    x_train, y_train, x_test = sphere_problem(n_train=5, n_test=3, dim=4)
    with pytest.raises(FloatingPointError, match="learning_rate"):
        train_ensemble(one_hidden_layer(16), x_train, 1e3 * y_train, x_test, members=2,
                       learning_rate=1e3, steps=[50])
