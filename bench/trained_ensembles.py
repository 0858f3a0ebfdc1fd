r"""Finite networks trained by gradient descent, set against the infinite-width prediction.

The claim checked here
----------------------
Lee et al. 2019 ("Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
Descent", §2.3 and eq. (16)): a network in NTK parameterization, of width w, initialized at
random and trained by full-batch gradient descent on the squared error, stays within O(1/√w) of
its linearization around initialization. As w → ∞ its output on test points ``x`` after training
for time t is therefore Gaussian over initializations, with the mean and covariance that
:func:`ntk.engine.predict.predict` returns for ``kernel="ntk"``::

    μ_t = Θ_td Θ_dd⁻¹ (I − e^{−Θ_dd τ/n}) Y
    Σ_t = K_tt + P K_dd Pᵀ − (P K_dt + K_td Pᵀ),     P = Θ_td Θ_dd⁻¹ (I − e^{−Θ_dd τ/n}),

``Θ`` the NTK, ``K`` the NNGP kernel, ``n = Y.size`` and ``τ = learning_rate · t``. An ensemble
of S independently initialized finite networks is a sample of size S from that Gaussian, up to
the finite-width corrections; :func:`train_ensemble` draws it and :func:`compare` measures the
distance in units of the sampling error.

Which gradient descent is predict's time t
------------------------------------------
neural-tangents (and ``predict``) describe gradient *flow* on the loss

    L(θ) = 1/(2n) · Σ_{i,j} (f_j(x_i; θ) − Y_ij)²,        n = Y.size = N·k,

in which, for the linearized network, ``d f(X)/dτ = −Θ̂ (f(X) − Y) / n``, hence
``f_τ(X) − Y = e^{−Θ̂ τ/n} (f_0(X) − Y)``. :func:`train_ensemble` takes discrete steps

    θ_{s+1} = θ_s − η ∇L(θ_s),

which are that flow sampled at ``τ = η s`` in the limit of small η: **step s with step size η is
``predict(..., t=s, learning_rate=η)``** (NT: "times are in units of the learning rate"). The
discrete map multiplies a mode of eigenvalue λ of Θ̂ by ``(1 − x)`` per step, x = ηλ/n, where the
flow multiplies by ``e^{−x}``. Since ``ln(1 − x) ≥ −x − x²/(2(1 − x))``,

    0 ≤ e^{−xs} − (1 − x)^s ≤ e^{−xs} · s x² / (2(1 − x)) ≤ x / (2e(1 − x))     for every s,

so each mode's residual differs from the flow's by at most ``x/(2e(1−x))`` of its initial size.
:func:`schedule` chooses η so that the stiffest mode has ``x = mode_step`` (default 0.05, an error
under 1%, well below the sampling error of an ensemble of a few hundred networks); that is η =
``mode_step / 2`` times ``predict.max_learning_rate``, far inside the stable range. We compare
with gradient flow (NT's formula) rather than with the discrete-time solution, which NT does
not provide for this ensemble.

Sampling error
--------------
With S networks, sample mean m̂ and unbiased sample variance s² of one output at one test point,
and predicted mean μ and variance σ², under the prediction

    z_mean = (m̂ − μ) / √(σ²/S)                          ~ N(0, 1),
    q = (S − 1) s² / σ²                                 ~ χ²(S − 1),
    z_variance = Φ⁻¹(F_{χ²(S−1)}(q))                    ~ N(0, 1)

(the exact χ² law of a Gaussian sample variance, mapped to a standard normal score), and at each
time, over the M test points together (their correlations accounted for: m̂ ~ N(μ, Σ/S)),

    S (m̂ − μ)ᵀ Σ⁻¹ (m̂ − μ)                             ~ χ²(M).

Scores at different times and test points are correlated (the same networks make all of them),
so the family of all m of them is judged by Bonferroni's bound, valid under any correlation: the
prediction stands when every p-value is ≥ α/m, i.e. every |z| ≤ Φ⁻¹(1 − α/2m) (:func:`critical_z`)
and every χ² p-value ≥ α/m, which happens with probability at least 1 − α when it is right
(:meth:`Agreement.consistent`). Finite width shows up as scores growing with S at fixed width and
shrinking with width at fixed S.

Networks: member i is ``build_network(spec, x.shape[1:], seed=sample_seed(seed, i))``, the same
network as sample i of ``monte_carlo_kernel_fn(spec, ..., seed=seed)``, initialized as
neural-tangents' ``stax`` would. The members are trained together: their parameters are stacked
along a leading axis and one vmapped forward pass (``torch.func.functional_call``) serves all.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from ntk.engine.kernel import as_points, check_inputs, kernel_fn, resolve_device
from ntk.engine.monte_carlo import sample_seed
from ntk.engine.networks import build_network
from ntk.engine.predict import Prediction, max_learning_rate, predict_from_spec
from ntk.spec.architecture import Architecture, SpecError

__all__ = ["Schedule", "schedule", "EnsembleRun", "train_ensemble", "Agreement", "compare",
           "critical_z", "Experiment", "experiment", "sphere_problem", "one_hidden_layer"]


@dataclass(frozen=True)
class Schedule:
    """A gradient-descent step size and the step counts at which to look at the ensemble.

    ``steps["init"]``: 0, the networks at initialization (where, for one hidden layer, mean and
    covariance are the predicted ones at any width: a deviation there is sampling error);
    ``steps["small"]``: the stiffest mode of Θ_dd has relaxed by 1 − 1/e, the others hardly;
    ``steps["large"]``: the slowest mode has relaxed by 1 − e^{−settle} (near convergence);
    ``steps["medium"]``: their geometric mean.
    """

    learning_rate: float
    steps: dict[str, int]


def schedule(ntk_train_train: Tensor, y_size: int, *, mode_step: float = 0.05,
             settle: float = 3.0) -> Schedule:
    """Step size η with ``η λ_max(Θ_dd) / n = mode_step`` and checkpoints spanning Θ_dd's spectrum.

    The time of a mode of eigenvalue λ is ``λ τ / n`` with τ = η s; the small, medium and large
    checkpoints put the stiffest mode at 1, the slowest at ``settle`` and the middle one at the
    geometric mean of those step counts.
    """
    ntk = torch.as_tensor(ntk_train_train, dtype=torch.float64)
    evals = torch.linalg.eigvalsh(0.5 * (ntk + ntk.mT))
    if float(evals[0]) <= 0:
        raise ValueError("the train-train NTK is singular: gradient descent never converges on it")
    learning_rate = 0.5 * mode_step * max_learning_rate(ntk, y_size)
    small = math.ceil(1.0 / mode_step)
    large = math.ceil(settle * y_size / (learning_rate * float(evals[0])))
    medium = round(math.sqrt(small * large))
    return Schedule(learning_rate, {"init": 0, "small": small, "medium": medium, "large": large})


@dataclass
class EnsembleRun:
    """Outputs of a trained ensemble at its checkpoints.

    ``test_outputs[i, j]``: member j's outputs on the test points (M, k) after ``steps[i]``
    steps of size ``learning_rate``, i.e. at ``predict(t=steps[i], learning_rate=learning_rate)``;
    ``train_loss[i, j]``: its loss L(θ) on the training set then.
    """

    steps: tuple[int, ...]
    learning_rate: float
    test_outputs: Tensor           # (T, S, M, k)
    train_loss: Tensor             # (T, S)


def train_ensemble(
    spec: Architecture | dict | str,
    x_train,
    y_train,
    x_test,
    *,
    members: int,
    learning_rate: float,
    steps: Sequence[int],
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> EnsembleRun:
    """Train ``members`` networks of ``spec`` by full-batch gradient descent on L(θ) (module doc).

    ``y_train`` is (N, k), or (N,) for k = 1; ``steps`` the checkpoints (step counts, any order,
    0 = at initialization). Raises ``SpecError`` for a spec that does not fit the inputs and
    ``FloatingPointError`` if the loss diverges (a learning rate too large for this network).
    """
    arch = Architecture.parse(spec)
    if int(members) < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate!r}")
    checkpoints = sorted({int(s) for s in steps})
    if not checkpoints or checkpoints[0] < 0:
        raise ValueError(f"steps must be non-negative step counts, got {list(steps)}")
    device = resolve_device(device)
    x = as_points(x_train, dtype, device)
    x_t = as_points(x_test, dtype, device)
    check_inputs(arch, x, x_t)
    y = torch.as_tensor(np.asarray(y_train) if not isinstance(y_train, Tensor) else y_train,
                        dtype=dtype, device=device)
    y = y[:, None] if y.ndim == 1 else y

    nets = [build_network(arch, tuple(x.shape[1:]), seed=sample_seed(seed, i), dtype=dtype,
                          device=device) for i in range(int(members))]
    if (x.shape[0],) + tuple(nets[0].output_shape) != tuple(y.shape):
        raise SpecError(("y_train",), f"the network maps the {x.shape[0]} training points to "
                        f"{(x.shape[0],) + tuple(nets[0].output_shape)}, y_train is {tuple(y.shape)}")
    stacked, _ = stack_module_state(nets)
    params = {name: p.detach().requires_grad_() for name, p in stacked.items()}
    # A parameter-less copy whose forward runs on whichever member's parameters it is handed.
    template = copy.deepcopy(nets[0]).to("meta")
    del nets
    ensemble = vmap(lambda p, points: functional_call(template, p, (points,)), in_dims=(0, None))

    def loss_per_member() -> Tensor:
        return 0.5 * (ensemble(params, x) - y).square().sum(dim=(1, 2)) / y.numel()

    test_outputs, train_loss = [], []
    done = 0
    for target in checkpoints:
        for _ in range(target - done):
            # The members share no parameter, so the gradient of their summed losses is each
            # member's own gradient.
            grads = torch.autograd.grad(loss_per_member().sum(), tuple(params.values()))
            with torch.no_grad():
                for p, g in zip(params.values(), grads):
                    p.sub_(learning_rate * g)
        done = target
        with torch.no_grad():
            loss = loss_per_member()
            if not bool(torch.isfinite(loss).all()):
                raise FloatingPointError(f"the training loss diverged by step {target}: "
                                         f"learning_rate={learning_rate:g} is too large")
            train_loss.append(loss)
            test_outputs.append(ensemble(params, x_t))
    return EnsembleRun(tuple(checkpoints), float(learning_rate), torch.stack(test_outputs),
                       torch.stack(train_loss))


@dataclass
class Agreement:
    """Ensemble statistics against a predicted Gaussian (module doc).

    ``z_mean``, ``z_variance`` (..., M, k) are standard normal under the prediction;
    ``variance_ratio`` (..., M, k) is s² / σ² (1 under the prediction, sampling sd √(2/(S−1)));
    ``mean_chi2`` (..., k) is the Mahalanobis distance of the ensemble mean from the predicted one
    over all M test points together, χ²(M) under the prediction, and ``mean_p`` its p-value.
    """

    members: int
    z_mean: Tensor
    z_variance: Tensor
    variance_ratio: Tensor
    mean_chi2: Tensor
    mean_p: Tensor

    @property
    def tests(self) -> int:
        """The size of the family: every z score and every χ² of the mean."""
        return self.z_mean.numel() + self.z_variance.numel() + self.mean_p.numel()

    def max_abs_z(self) -> float:
        return float(torch.cat([self.z_mean.flatten(), self.z_variance.flatten()]).abs().max())

    def consistent(self, alpha: float = 0.01) -> bool:
        """Whether the prediction stands at family-wise level ``alpha`` (Bonferroni, module doc)."""
        return (self.max_abs_z() <= critical_z(self.tests, alpha)
                and float(self.mean_p.min()) >= alpha / self.tests)


def compare(outputs: Tensor, mean: Tensor, covariance: Tensor) -> Agreement:
    """Score ensemble outputs (..., S, M, k) against a predicted mean (..., M, k) and covariance
    (..., M, M) (shared by the k outputs, as ``predict`` returns it).

    Besides the per-point scores, ``S (m̂ − μ)ᵀ Σ⁻¹ (m̂ − μ) ~ χ²(M)`` (m̂ ~ N(μ, Σ/S)) judges
    the mean at all test points at once, their correlations accounted for.
    """
    outputs = torch.as_tensor(outputs, dtype=torch.float64)
    mean = torch.as_tensor(mean, dtype=torch.float64, device=outputs.device)
    covariance = torch.as_tensor(covariance, dtype=torch.float64, device=outputs.device)
    chol, info = torch.linalg.cholesky_ex(covariance)
    if bool((info != 0).any()):
        raise ValueError("the predicted covariance of the test points must be positive definite")
    variance = torch.diagonal(covariance, dim1=-2, dim2=-1)[..., None]
    members, points = outputs.shape[-3], outputs.shape[-2]
    if members < 2:
        raise ValueError("a sample variance needs at least 2 members")
    sample_mean = outputs.mean(dim=-3)
    sample_var = outputs.var(dim=-3, correction=1)
    z_mean = (sample_mean - mean) / torch.sqrt(variance / members)
    whitened = torch.linalg.solve_triangular(chol, sample_mean - mean, upper=False)
    mean_chi2 = members * whitened.square().sum(dim=-2)
    ratio = sample_var / variance
    dof = members - 1
    q = (dof * ratio).cpu().numpy()
    # Each tail from its own distribution function, so that far-out scores keep their precision.
    z_var = np.where(q >= dof, stats.norm.isf(stats.chi2.sf(q, dof)),
                     stats.norm.ppf(stats.chi2.cdf(q, dof)))
    mean_p = stats.chi2.sf(mean_chi2.cpu().numpy(), points)
    return Agreement(members, z_mean, torch.as_tensor(z_var, device=outputs.device), ratio,
                     mean_chi2, torch.as_tensor(mean_p, device=outputs.device))


def critical_z(tests: int, alpha: float = 0.01) -> float:
    """Bonferroni threshold: under the prediction all of ``tests`` standard normal scores are
    within ±critical_z with probability ≥ 1 − alpha, however they are correlated."""
    return float(stats.norm.isf(alpha / (2 * tests)))


# -- the experiment ----------------------------------------------------------------------------


@dataclass
class Experiment:
    """One ensemble against its prediction: ``prediction`` holds the predicted Gaussian at each
    of ``run.steps`` (leading axis), ``prediction_at_infinity`` the t = ∞ one."""

    schedule: Schedule
    prediction: Prediction
    prediction_at_infinity: Prediction
    run: EnsembleRun
    agreement: Agreement


def experiment(spec, x_train, y_train, x_test, *, members: int, seed: int = 0,
               plan: Schedule | None = None, device=None) -> Experiment:
    """Train ``members`` networks of ``spec`` and score them against ``predict(kernel="ntk")``.

    ``plan`` defaults to :func:`schedule` of the analytic train-train NTK (which no width
    changes), so ensembles of several widths can share it. No regularization (``diag_reg=0``):
    gradient descent on L(θ) has none.
    """
    y_size = int(np.prod(np.shape(y_train)))
    if plan is None:
        plan = schedule(kernel_fn(spec, x_train, get=("ntk",))["ntk"], y_size)
    steps = sorted(plan.steps.values())
    kw = dict(kernel="ntk", learning_rate=plan.learning_rate, compute_cov=True, device=device)
    prediction = predict_from_spec(spec, x_train, y_train, x_test, t=steps, **kw)
    at_infinity = predict_from_spec(spec, x_train, y_train, x_test, t=None, **kw)
    run = train_ensemble(spec, x_train, y_train, x_test, members=members,
                         learning_rate=plan.learning_rate, steps=steps, seed=seed, device=device)
    agreement = compare(run.test_outputs, prediction.mean, prediction.covariance)
    return Experiment(plan, prediction, at_infinity, run, agreement)


def one_hidden_layer(width: int, activation: str = "Relu") -> dict:
    """Dense(width) → activation → Dense(1), w_std = 1.5, b_std = 0.05, NTK parameterization.

    One hidden layer keeps an ensemble of hundreds of width-1024 networks trainable on a CPU
    in about a minute; depth changes the kernels, not the claim.
    """
    dense = {"type": "Dense", "w_std": 1.5, "b_std": 0.05}
    return {"parameterization": "ntk",
            "layers": [{**dense, "out_dim": width}, {"type": activation}, {**dense, "out_dim": 1}]}


def sphere_problem(n_train: int = 8, n_test: int = 6, dim: int = 8, seed: int = 0):
    """(x_train, y_train (n_train, 1), x_test): points uniform on the sphere of radius √dim (unit
    variance per coordinate) and targets ``sin(2⟨x, u⟩)``, u ~ N(0, I/dim), so ⟨x, u⟩ ~ N(0, 1).

    Points on a sphere keep the train NTK well conditioned (its eigenvalues within a factor
    ~10 of each other here), so gradient descent converges in a few hundred steps.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, dim))
    x *= math.sqrt(dim) / np.linalg.norm(x, axis=1, keepdims=True)
    direction = rng.standard_normal(dim) / math.sqrt(dim)
    y = np.sin(2.0 * x[:n_train] @ direction)[:, None]
    return x[:n_train], y, x[n_train:]
