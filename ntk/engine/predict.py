r"""Infinite-ensemble predictions of wide networks trained by gradient descent on MSE.

This module reproduces ``neural_tangents.predict.gradient_descent_mse_ensemble`` (NT 0.6.5,
``neural_tangents/_src/predict.py``) called as ``predict_fn(t, x_test, get, compute_cov)``,
but from *precomputed kernel blocks*: the service computes and caches Gram tiles separately,
factorizes the train-train kernel once (:func:`factorize`; the workers cache it, see
``ntk.worker.store``), and answers many test sets and many times ``t`` from it
(:func:`predict`). Pure torch: no service code is imported here.

Notation (used in every docstring below)
----------------------------------------
``X``: the N training inputs, ``x``: the M test inputs, ``Y``: targets (N, k),
``n = Y.size = N·k`` (NT's time normalization, ``y_train.size``).
``K``: NNGP kernel, ``Θ``: NTK. Subscripts: ``dd`` = train-train (N, N), ``td`` = test-train
(M, N), ``dt`` = its transpose, ``tt`` = test-test (M, M).
``G`` is the *dynamics kernel* of a mode (``Θ`` for ``"ntk"``/``"ntkgp"``, ``K`` for ``"nngp"``)
and ``A = G_dd + ε I`` its regularized train-train block, with
``ε = diag_reg`` if ``diag_reg_absolute_scale`` else ``ε = diag_reg · tr(G_dd) / N``
(NT ``_add_diagonal_regularizer``). ``A = V diag(λ) Vᵀ`` is its eigendecomposition and
``A = L Lᵀ`` its Cholesky factorization. ``τ = learning_rate · t`` (NT: "times are in units of
the learning rate").

The spectral function of gradient flow (NT ``-_make_inv_expm1_fn(n)``, with eigenvalues clipped
at 0 inside the exponential as NT does)::

    φ_τ(λ) = (1 − exp(−max(λ, 0) · τ / n)) / |λ|          → 1/λ as τ → ∞  (λ > 0)

so ``V diag(φ_τ(λ)) Vᵀ = A⁻¹ (I − exp(−A τ / n))`` for positive-definite ``A``.

Modes (``kernel``)
------------------
``"ntk"``
    Infinite ensemble of infinitely wide networks, all layers trained by gradient flow on MSE
    (Lee et al. 2019, "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
    Descent", §2.3.1, eq. (16))::

        μ_t  = Θ_td A⁻¹ (I − e^{−Aτ/n}) Y
        Σ_t  = K_tt + P K_dd Pᵀ − (P K_dt + K_td Pᵀ),   P = Θ_td A⁻¹ (I − e^{−Aτ/n})

    with ``A = Θ_dd + εI`` and the *unregularized* ``K_dd`` in the middle (as NT).
``"nngp"``
    Only the readout layer trained (the NTK of that model is the NNGP kernel); at t = ∞ the
    exact Bayesian posterior of the infinitely wide network (Lee et al. 2018, "Deep Neural
    Networks as Gaussian Processes"; Rasmussen & Williams 2006, eqs. (2.22)–(2.24))::

        μ_t  = K_td A⁻¹ (I − e^{−Aτ/n}) Y
        Σ_t  = K_tt − K_td A⁻¹ (I − e^{−2Aτ/n}) K_dt,          A = K_dd + εI
``"ntkgp"``
    The GP posterior with the NTK as prior covariance (He, Lakshminarayanan & Teh 2020,
    "Bayesian Deep Ensembles via the Neural Tangent Kernel", NTKGP): NT computes it only at
    t = ∞, in ``gp_inference(get="ntkgp")``: ``μ = Θ_td A⁻¹ Y``, ``Σ = Θ_tt − Θ_td A⁻¹ Θ_dt``.
    NT's ``gradient_descent_mse_ensemble`` rejects ``get="ntkgp"`` (NotImplementedError). For
    finite t this module *extends* it as the ``"nngp"`` formulas with ``Θ`` in place of ``K``
    everywhere (exactly NT's ensemble, ``get="nngp"``, given a kernel_fn whose NNGP is the NTK):
    this is the ensemble of He et al.'s modified networks, whose initial function is a
    ``GP(0, Θ)``, trained for time t, and it tends to NT's ``gp_inference`` answer as t → ∞.

Numerics mirror NT: ``t = None`` (∞) uses a Cholesky solve of ``A`` (NT ``gp_inference`` via
``_get_cho_solve``); finite ``t`` (including ``float('inf')``) uses ``eigh`` of ``A`` (NT
``eigenspace``), eigenvalues ≤ 0 dropped by the clipping above. Where NT would produce NaN
(Cholesky of a non-positive-definite ``A``; ``t = inf`` with an eigenvalue ≤ 0) this module
raises :class:`NotPositiveDefinite` instead; where NT divides 0/0 (an eigenvalue exactly 0 at
finite t) it uses the limit ``φ_τ(0) = τ/n``. Every result is checked finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "KERNEL_MODES",
    "PredictError",
    "NotPositiveDefinite",
    "NonFinitePrediction",
    "Factorization",
    "Prediction",
    "required_kernels",
    "dynamics_kernel",
    "init_kernel",
    "regularizer",
    "factorize",
    "method_for",
    "spectral_weights",
    "predict",
    "max_learning_rate",
    "class_targets",
    "one_hot_targets",
    "labels_from_mean",
    "predict_from_spec",
]

KERNEL_MODES = ("ntk", "nngp", "ntkgp")
METHODS = ("cholesky", "eigh")

ArrayLike = Union[Tensor, np.ndarray, Sequence]
Times = Union[None, float, int, Sequence[float], np.ndarray, Tensor]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class PredictError(ValueError):
    """Invalid arguments to a prediction (shapes, modes, negative times, missing blocks)."""


class NotPositiveDefinite(PredictError):
    """The regularized train-train kernel is not positive definite at this ``diag_reg``.

    NT returns NaN in this situation; the service answers 422 asking to raise ``diag_reg``.
    """


class NonFinitePrediction(NotPositiveDefinite):
    """A prediction came out non-finite (NaN/inf): the kernel is too ill-conditioned at this
    ``diag_reg``."""


# --------------------------------------------------------------------------------------------
# Which kernels each mode needs
# --------------------------------------------------------------------------------------------


def _check_mode(kernel: str) -> str:
    if kernel not in KERNEL_MODES:
        raise PredictError(f"unknown kernel mode {kernel!r}; expected one of {KERNEL_MODES}")
    return kernel


def dynamics_kernel(kernel: str) -> str:
    """The kernel ``G`` that drives gradient flow in a mode (the matrix that is factorized).

    ``"ntk"`` and ``"ntkgp"`` train with the NTK ``Θ``; ``"nngp"`` with the NNGP ``K``
    (NT ``gradient_descent_mse_ensemble``: ``eigenspace(get)``; ``gp_inference``:
    ``k = g if g != 'ntkgp' else 'ntk'``).
    """
    return "nngp" if _check_mode(kernel) == "nngp" else "ntk"


def init_kernel(kernel: str) -> str:
    """The prior covariance of the function at initialization in a mode.

    ``K`` for ``"ntk"`` and ``"nngp"`` (NNGP = output covariance of the random network);
    ``Θ`` for ``"ntkgp"`` (He et al. 2020). NT ``gp_inference``: ``g_init``.
    """
    return "ntk" if _check_mode(kernel) == "ntkgp" else "nngp"


def required_kernels(kernel: str, compute_cov: bool = True) -> dict[str, tuple[str, ...]]:
    """Kernel blocks a prediction needs, so the service computes only those.

    Returns ``{"train_train": (...), "test_train": (...), "test_test": (...)}``, each a tuple
    of kernel names in ``("nngp", "ntk")`` order. Mirrors NT ``_get_dependency`` plus
    ``get_kernels`` (``test_test`` is only needed for the covariance):

    ============  ===============  ===============  ===========
    mode, cov     train_train      test_train       test_test
    ============  ===============  ===============  ===========
    ntk, False    ntk              ntk              —
    ntk, True     nngp, ntk        nngp, ntk        nngp
    nngp          nngp             nngp             nngp (cov)
    ntkgp         ntk              ntk              ntk (cov)
    ============  ===============  ===============  ===========
    """
    _check_mode(kernel)
    if kernel == "ntk" and compute_cov:
        dd = td = ("nngp", "ntk")
    else:
        dd = td = (dynamics_kernel(kernel),)
    tt = (init_kernel(kernel),) if compute_cov else ()
    return {"train_train": dd, "test_train": td, "test_test": tt}


# --------------------------------------------------------------------------------------------
# Factorization of the train-train kernel
# --------------------------------------------------------------------------------------------


def _as_tensor(a: ArrayLike, dtype: torch.dtype, device: torch.device | str | None) -> Tensor:
    if isinstance(a, Tensor):
        return a.to(device=device if device is not None else a.device, dtype=dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def _finite(a: Tensor) -> bool:
    """Whether every entry is finite, a block of rows at a time: ``torch.isfinite`` of a whole
    N × N matrix makes temporaries of 1.4× its size (its absolute value among them)."""
    if a.numel() == 0 or a.ndim == 0:
        return bool(torch.isfinite(a).all())
    rows = max(1, (1 << 20) // a[0].numel())
    return all(bool(torch.isfinite(block).all()) for block in a.split(rows))


def _check_finite(name: str, a: Tensor) -> None:
    if not _finite(a):
        raise PredictError(f"{name} contains non-finite values (NaN or inf, or beyond the range of {a.dtype})")


def _unit_targets(y: Tensor) -> tuple[Tensor, int]:
    """``y = y_unit · 2^exponent`` with every ``|y_unit| < 2`` (``exponent`` 0 for such targets).

    The mean is linear in the targets, so it is computed from ``y_unit`` and multiplied by
    ``2^exponent`` at the end: powers of two round nothing, so the result is the same, but a mean
    that overflows only then is the targets' doing, not an ill-conditioned kernel's.
    """
    peak = float(y.abs().max()) if y.numel() else 0.0
    exponent = max(0, math.frexp(peak)[1] - 1)
    return y * 2.0**-exponent, exponent


def regularizer(g_dd: Tensor, diag_reg: float, diag_reg_absolute_scale: bool) -> float:
    """Absolute diagonal regularizer ``ε`` added to ``G_dd`` (NT ``_add_diagonal_regularizer``).

    ``ε = diag_reg`` if ``diag_reg_absolute_scale`` else ``ε = diag_reg · tr(G_dd) / N``.
    """
    if not math.isfinite(diag_reg) or diag_reg < 0:
        raise PredictError(f"diag_reg must be finite and >= 0, got {diag_reg!r}")
    if diag_reg_absolute_scale:
        return float(diag_reg)
    return float(diag_reg) * float(torch.diagonal(g_dd).sum()) / g_dd.shape[0]


def method_for(t: Times) -> str:
    """Factorization a time needs: ``"cholesky"`` for ``t=None`` (∞), ``"eigh"`` otherwise
    (NT: ``t is None`` → ``gp_inference`` Cholesky solve, else ``eigenspace``)."""
    return "cholesky" if t is None else "eigh"


@dataclass
class Factorization:
    """Reusable factorization of the regularized train-train dynamics kernel ``A = G_dd + εI``.

    Built once by :func:`factorize`; serves any number of test sets, targets ``Y`` and times.

    Attributes:
      matrix: ``"ntk"`` or ``"nngp"``, which kernel ``G`` was factorized
        (:func:`dynamics_kernel` of the mode).
      diag_reg, diag_reg_absolute_scale: as given; ``epsilon`` the absolute ``ε`` added.
      cholesky: lower-triangular ``L`` with ``A = L Lᵀ`` (for ``t = None``), or None.
      evals, evecs: ``A = V diag(λ) Vᵀ`` ascending (for finite ``t``), or None.
      nngp_train_train: the unregularized ``K_dd`` when ``matrix == "ntk"`` and it was given:
        the ``"ntk"`` covariance needs it (Lee et al. 2019, eq. (16)).
    """

    matrix: str
    n: int
    diag_reg: float
    diag_reg_absolute_scale: bool
    epsilon: float
    cholesky: Tensor | None = None
    evals: Tensor | None = None
    evecs: Tensor | None = None
    nngp_train_train: Tensor | None = None

    @property
    def methods(self) -> tuple[str, ...]:
        out = ()
        if self.cholesky is not None:
            out += ("cholesky",)
        if self.evals is not None:
            out += ("eigh",)
        return out

    def tensors(self) -> dict[str, Tensor]:
        names = ("cholesky", "evals", "evecs", "nngp_train_train")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors().values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.tensors().values())).dtype

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def to(self, device=None, dtype=None) -> "Factorization":
        kw = {k: v.to(device=device, dtype=dtype) for k, v in self.tensors().items()}
        return Factorization(self.matrix, self.n, self.diag_reg, self.diag_reg_absolute_scale,
                             self.epsilon, **kw)

    def serves(self, kernel: str, t: Times, compute_cov: bool) -> bool:
        """Whether this factorization can answer ``predict(kernel=..., t=..., compute_cov=...)``."""
        if dynamics_kernel(kernel) != self.matrix or method_for(t) not in self.methods:
            return False
        return not (kernel == "ntk" and compute_cov and self.nngp_train_train is None)


def _symmetric(a: Tensor) -> Tensor:
    """``(A + Aᵀ)/2``: both triangles count, as ``jnp.linalg.eigh(symmetrize_input=True)``."""
    return 0.5 * (a + a.mT)


def _cholesky(a: Tensor, what: str, diag_reg: float, absolute: bool, epsilon: float,
              overwrite: bool = False) -> Tensor:
    """Lower Cholesky factor of ``A``; :class:`NotPositiveDefinite` where NT's
    ``jsp.linalg.cho_factor`` would return NaN. ``overwrite``: computed in ``a``'s own memory,
    from its lower triangle (as LAPACK's potrf, and NT's ``cho_factor``, read one triangle), the
    upper one zeroed: ``a`` seen column-major (``a.mT``) is the upper factor's storage, which
    LAPACK fills in place, so no second N × N matrix exists."""
    if overwrite:
        info = torch.empty((), dtype=torch.int32, device=a.device)
        upper, info = torch.linalg.cholesky_ex(a.mT, upper=True, out=(a.mT, info))
        L = upper.mT.tril_()
    else:
        L, info = torch.linalg.cholesky_ex(a)
    bad = int(info)
    if bad != 0 or not _finite(L):
        scale = "absolute" if absolute else "relative to the mean diagonal"
        raise NotPositiveDefinite(
            f"the train-train {what.upper()} kernel ({a.shape[0]}x{a.shape[0]}) plus diag_reg="
            f"{diag_reg:g} ({scale}; {epsilon:.3g} added to the diagonal) is not positive "
            f"definite (Cholesky failed at leading minor {bad}): raise diag_reg")
    return L


def factorize(
    k_train_train: Mapping[str, ArrayLike] | ArrayLike,
    kernel: str = "ntk",
    *,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    method: str = "cholesky",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    overwrite: bool = False,
) -> Factorization:
    """Factorize ``A = G_dd + εI`` once for mode ``kernel`` (NT ``_get_cho_solve`` /
    ``eigenspace``).

    Args:
      k_train_train: ``{"nngp": (N, N), "ntk": (N, N)}`` holding at least
        ``dynamics_kernel(kernel)``; for ``kernel="ntk"`` include ``"nngp"`` too if the
        covariance will be asked for (it is stored, unregularized). A bare matrix is taken as
        the dynamics kernel.
      kernel: ``"ntk"``, ``"nngp"`` or ``"ntkgp"``.
      diag_reg, diag_reg_absolute_scale: NT's regularization (see :func:`regularizer`).
      method: ``"cholesky"`` (serves ``t=None``), ``"eigh"`` (finite ``t``) or ``"both"``;
        :func:`method_for` maps a ``t`` to the method it needs.
      overwrite: the Cholesky factor may take the place of the dynamics kernel ``G_dd`` (a tensor
        of ``dtype`` on ``device``, exactly symmetric: only its lower triangle is read), which
        it destroys: peak memory one N × N matrix instead of three (the symmetrized copy, ``A``
        and ``L``). The service's join passes its freshly assembled matrix this way.

    Raises:
      NotPositiveDefinite: Cholesky of ``A`` fails (NT would return NaN).
    """
    g = dynamics_kernel(kernel)
    if method not in METHODS + ("both",):
        raise PredictError(f"method must be 'cholesky', 'eigh' or 'both', got {method!r}")
    if isinstance(k_train_train, Mapping):
        if g not in k_train_train or k_train_train[g] is None:
            raise PredictError(f"mode {kernel!r} needs the train-train {g!r} kernel")
        g_dd = _as_tensor(k_train_train[g], dtype, device)
        nngp_dd = k_train_train.get("nngp") if kernel == "ntk" else None
    else:
        g_dd = _as_tensor(k_train_train, dtype, device)
        nngp_dd = None
    if g_dd.ndim != 2 or g_dd.shape[0] != g_dd.shape[1] or g_dd.shape[0] == 0:
        raise PredictError(f"train-train kernel must be a non-empty square matrix, got "
                           f"shape {tuple(g_dd.shape)}")
    _check_finite(f"train-train {g} kernel", g_dd)
    n = g_dd.shape[0]
    eps = regularizer(g_dd, diag_reg, diag_reg_absolute_scale)
    in_place = overwrite and method == "cholesky"
    if in_place:
        a = g_dd
        a.diagonal().add_(eps)
    else:
        a = _symmetric(g_dd) + eps * torch.eye(n, dtype=dtype, device=g_dd.device)

    out = Factorization(matrix=g, n=n, diag_reg=float(diag_reg),
                        diag_reg_absolute_scale=bool(diag_reg_absolute_scale), epsilon=eps)
    if nngp_dd is not None:
        out.nngp_train_train = _as_tensor(nngp_dd, dtype, g_dd.device)
        if tuple(out.nngp_train_train.shape) != (n, n):
            raise PredictError("train-train nngp and ntk kernels differ in shape")
        _check_finite("train-train nngp kernel", out.nngp_train_train)
    if method in ("cholesky", "both"):
        out.cholesky = _cholesky(a, g, diag_reg, diag_reg_absolute_scale, eps, overwrite=in_place)
    if method in ("eigh", "both"):
        out.evals, out.evecs = _eigh(a)
    return out


def _eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    """``A = V diag(λ) Vᵀ``, λ ascending. On a CPU through numpy, whose LAPACK (OpenBLAS's
    dsyevd, the one neural-tangents reaches through jax and scipy) takes 5.2 s for N = 4096 on
    the 2-core bench machine where torch's (MKL's) takes 6.2 s; elsewhere ``torch.linalg.eigh``."""
    if a.device.type != "cpu":
        return torch.linalg.eigh(a)
    evals, evecs = np.linalg.eigh(a.numpy())
    return torch.from_numpy(evals), torch.from_numpy(evecs)


# --------------------------------------------------------------------------------------------
# Spectral functions and the two solvers
# --------------------------------------------------------------------------------------------


def spectral_weights(evals: Tensor, tau: float, n: int) -> Tensor:
    r"""``φ_τ(λ) = (1 − exp(−max(λ,0) τ/n)) / |λ|`` (NT ``-inv_expm1(evals, t)``).

    ``V diag(φ_τ) Vᵀ = A⁻¹(I − e^{−Aτ/n})``: the gradient-flow solution operator (Jacot et al.
    2018; Lee et al. 2019, eq. (16)). Eigenvalues < 0 give 0 (NT's clipping). Where NT returns
    NaN this returns the limit ``τ/n`` (λ = 0, finite τ) or raises :class:`NotPositiveDefinite`
    (λ ≤ 0 and τ = ∞, i.e. ``A`` is singular and ``A⁻¹`` does not exist).
    """
    if math.isinf(tau):
        if bool((evals <= 0).any()):
            raise NotPositiveDefinite(
                f"t = inf needs a positive-definite train kernel, but its smallest eigenvalue "
                f"at this diag_reg is {float(evals.min()):.3g}: raise diag_reg")
        return 1.0 / evals
    phi = -torch.expm1(-evals.clamp(min=0.0) * tau / n) / evals.abs()
    return torch.where(evals == 0, torch.full_like(evals, tau / n), phi)


def _times(t: Times, learning_rate: float) -> tuple[tuple[int, ...], list[float]]:
    """``t`` → (leading shape, flat list of ``τ = learning_rate · t``), NT's convention."""
    try:
        lr = float(learning_rate)
    except (TypeError, ValueError):
        lr = math.nan
    if isinstance(learning_rate, bool) or not (math.isfinite(lr) and lr > 0):
        raise PredictError(f"learning_rate must be finite and > 0, got {learning_rate!r}")
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    try:
        arr = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PredictError(f"t must be None, a number or a list of numbers, got {t!r}") from e
    if np.isnan(arr).any() or (arr < 0).any():
        raise PredictError("t must be >= 0 (None or inf for infinite time)")
    return arr.shape, [float(v) * lr for v in arr.reshape(-1)]


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """Gaussian over test outputs: ``mean`` (t_shape + (M, k)); when asked, ``covariance``
    (t_shape + (M, M), shared by the k outputs) and ``variance`` (its diagonal,
    t_shape + (M,)). ``t`` is echoed as given (None = ∞)."""

    t: Any
    kernel: str
    mean: Tensor
    covariance: Tensor | None = None
    variance: Tensor | None = None
    extras: dict = field(default_factory=dict)

    def as_numpy(self) -> dict[str, Any]:
        out = {"t": self.t, "mean": self.mean.detach().cpu().numpy()}
        if self.covariance is not None:
            out["covariance"] = self.covariance.detach().cpu().numpy()
            out["variance"] = self.variance.detach().cpu().numpy()
        return out


def _block(blocks: Mapping[str, ArrayLike] | None, name: str, which: str, shape: tuple,
           dtype, device) -> Tensor:
    if blocks is None or name not in blocks or blocks[name] is None:
        raise PredictError(f"missing {which} {name!r} kernel block")
    b = _as_tensor(blocks[name], dtype, device)
    if tuple(b.shape) != shape:
        raise PredictError(f"{which} {name!r} kernel has shape {tuple(b.shape)}, "
                           f"expected {shape}")
    _check_finite(f"{which} {name} kernel", b)
    return b


def _cho_solve(L: Tensor, b: Tensor) -> Tensor:
    """``A⁻¹ b`` from ``A = L Lᵀ``: ``Lᵀ \\ (L \\ b)``, the two triangular solves of LAPACK's potrs
    (NT ``_get_cho_solve``). ``torch.cholesky_solve`` would first copy ``L`` into LAPACK's
    column-major layout (an N × N matrix more); ``solve_triangular`` reads either layout."""
    return torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, b, upper=False), upper=True)


def _mean_inf(f: Factorization, g_td: Tensor, y: Tensor) -> Tensor:
    """``μ_∞ = G_td A⁻¹ Y`` by Cholesky solve (NT ``gp_inference``, ``k_inv_y``)."""
    return g_td @ _cho_solve(f.cholesky, y)


def _posterior_cov_inf(f: Factorization, c_td: Tensor, c_tt: Tensor) -> Tensor:
    """``C_tt − C_td A⁻¹ C_dt = C_tt − WᵀW``, ``W = L⁻¹ C_dt`` (R&W eq. (2.24); NT
    ``gp_inference`` for ``"nngp"`` with ``C = K`` and for ``"ntkgp"`` with ``C = Θ``)."""
    w = torch.linalg.solve_triangular(f.cholesky, c_td.mT, upper=False)
    return c_tt - w.mT @ w


def _ntk_cov_inf(f: Factorization, ntk_td: Tensor, nngp_td: Tensor, nngp_tt: Tensor) -> Tensor:
    """Lee et al. 2019 eq. (16) at t = ∞: with ``S = A⁻¹ Θ_dt`` (N, M),
    ``Σ = K_tt + Sᵀ K_dd S − Sᵀ K_dt − K_td S`` (NT ``gp_inference``, ``g == 'ntk'``)."""
    s = _cho_solve(f.cholesky, ntk_td.mT)
    cross = s.mT @ nngp_td.mT
    return nngp_tt + s.mT @ (f.nngp_train_train @ s) - cross - cross.mT


def _posterior_cov_t(b: Tensor, c_tt: Tensor, phi2: Tensor) -> Tensor:
    """``C_tt − C_td V diag(φ_{2τ}) Vᵀ C_dt = C_tt − (B φ_{2τ}) Bᵀ``, ``B = C_td V``, for every
    row of ``phi2`` (T, N) at once (NT finite-t covariance, ``g == 'nngp'``; also ``"ntkgp"``
    with ``C = Θ``)."""
    return c_tt - (b * phi2[:, None, :]) @ b.mT


def _ntk_cov_t(b: Tensor, v: Tensor, nngp_td: Tensor, nngp_dd: Tensor, nngp_tt: Tensor,
               phi: Tensor) -> Tensor:
    """Lee et al. 2019 eq. (16) for every row of ``phi`` (T, N): with ``P = Θ_td V diag(φ_τ) Vᵀ``
    (M, N) and ``B = Θ_td V``, ``Σ_t = K_tt + P K_dd Pᵀ − P K_dt − K_td Pᵀ`` (NT finite-t,
    ``g == 'ntk'``).

    ``P K_dd Pᵀ`` costs O(M N²) per time whichever way it is grouped. For many times it pays to
    carry ``K_dd`` into the eigenbasis once: with its Cholesky factor, ``P K_dd Pᵀ = R Rᵀ`` with
    ``R = B diag(φ_τ) (Vᵀ L)`` (``Vᵀ L``: 2⅓N³ flops, or ``Vᵀ K_dd V``, 4N³, where ``K_dd`` is
    only semi-definite), which saves forming P (2MN² flops) at each time: worth it once
    (T − 1)·M > 1.2·N. No inverse of ``K_dd`` is taken: it is not regularized, and may be singular.
    """
    bp = b * phi[:, None, :]
    times, m, n = bp.shape
    if (times - 1) * m > 1.2 * n:
        cross = bp @ (v.mT @ nngp_td.mT)
        factor, info = torch.linalg.cholesky_ex(nngp_dd)
        if int(info) == 0:
            r = bp @ (v.mT @ factor)
            return nngp_tt + r @ r.mT - cross - cross.mT
        return nngp_tt + bp @ (v.mT @ nngp_dd @ v) @ bp.mT - cross - cross.mT
    p = bp @ v.mT
    cross = p @ nngp_td.mT
    return nngp_tt + p @ nngp_dd @ p.mT - cross - cross.mT


def predict(
    factorization: Factorization,
    y_train: ArrayLike,
    k_test_train: Mapping[str, ArrayLike],
    k_test_test: Mapping[str, ArrayLike] | None = None,
    *,
    kernel: str = "ntk",
    t: Times = None,
    learning_rate: float = 1.0,
    compute_cov: bool = True,
) -> Prediction:
    """Mean [and covariance] of the infinite ensemble at time[s] ``t``.

    Equals NT ``gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate,
    diag_reg, diag_reg_absolute_scale)(t, x_test, get=kernel, compute_cov)`` (``"ntkgp"``: NT
    ``gp_inference`` at ``t=None``, the documented extension at finite t).

    Args:
      factorization: from :func:`factorize` for this mode's dynamics kernel, with the method
        ``method_for(t)`` needs (and ``nngp_train_train`` for ``"ntk"`` with covariance).
      y_train: (N, k) targets (a 1-D (N,) array is taken as (N, 1)). NT's time normalization
        is ``n = y_train.size``.
      k_test_train: ``{"nngp": (M, N), "ntk": (M, N)}``, the blocks
        ``required_kernels(kernel, compute_cov)["test_train"]``.
      k_test_test: ``{"nngp" or "ntk": (M, M)}`` (only the ``test_test`` entry of
        :func:`required_kernels`), needed when ``compute_cov``.
      t: None (∞, Cholesky), a number, or a list / array of numbers (one eigendecomposition
        serves them all; the result gains t's shape as leading axes).
      learning_rate: ``τ = learning_rate · t``.

    Returns:
      :class:`Prediction` with mean (..., M, k), covariance (..., M, M), variance (..., M),
      float tensors on the factorization's device (None when ``compute_cov`` is false).

    Raises:
      PredictError: bad arguments; NotPositiveDefinite / NonFinitePrediction: see module doc.
    """
    f = factorization
    _check_mode(kernel)
    g = dynamics_kernel(kernel)
    if f.matrix != g:
        raise PredictError(f"mode {kernel!r} needs a factorization of the {g!r} kernel, got "
                           f"one of {f.matrix!r}")
    method = method_for(t)
    if method not in f.methods:
        raise PredictError(f"t={'None' if t is None else 'finite'} needs a factorization "
                           f"with method={method!r}; this one has {f.methods}")
    if kernel == "ntk" and compute_cov and f.nngp_train_train is None:
        raise PredictError("'ntk' covariance needs the train-train nngp kernel in the "
                           "factorization (factorize({'nngp':..., 'ntk':...}, 'ntk'))")

    dtype, device, n = f.dtype, f.device, f.n
    y = _as_tensor(y_train, dtype, device)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise PredictError(f"y_train must be ({n}, k), got shape {tuple(y.shape)}")
    _check_finite("y_train", y)
    y, exponent = _unit_targets(y)
    if not isinstance(k_test_train, Mapping) or g not in k_test_train:
        raise PredictError(f"k_test_train must be a dict holding the {g!r} block")
    m = _as_tensor(k_test_train[g], dtype, device).shape[0]
    need = required_kernels(kernel, compute_cov)
    td = {name: _block(k_test_train, name, "test-train", (m, n), dtype, device)
          for name in need["test_train"]}
    tt = {name: _block(k_test_test, name, "test-test", (m, m), dtype, device)
          for name in need["test_test"]}
    g_td = td[g]
    c = init_kernel(kernel)

    mean = cov = None
    if t is None:
        mean = _mean_inf(f, g_td, y)
        if compute_cov:
            if kernel == "ntk":
                cov = _ntk_cov_inf(f, td["ntk"], td["nngp"], tt["nngp"])
            else:
                cov = _posterior_cov_inf(f, td[c], tt[c])
    else:
        t_shape, taus = _times(t, learning_rate)
        size = y.numel()
        evals, v = f.evals, f.evecs
        b = g_td @ v
        phis = torch.stack([spectral_weights(evals, tau, size) for tau in taus])
        # μ_t = G_td V diag(φ_τ) Vᵀ Y = B (φ_τ ⊙ VᵀY), for all times in one batched product.
        means = b @ (phis[:, :, None] * (v.mT @ y))
        if compute_cov and kernel == "ntk":
            covs = _ntk_cov_t(b, v, td["nngp"], f.nngp_train_train, tt["nngp"], phis)
        elif compute_cov:
            phis2 = torch.stack([spectral_weights(evals, 2 * tau, size) for tau in taus])
            covs = _posterior_cov_t(b, tt[c], phis2)
        mean = means.reshape(t_shape + means.shape[1:])
        if compute_cov:
            cov = covs.reshape(t_shape + covs.shape[1:])

    if not _finite(mean):
        raise NonFinitePrediction(f"the {kernel} mean came out non-finite: the train kernel is "
                                  f"too ill-conditioned at diag_reg={f.diag_reg:g}; raise "
                                  f"diag_reg")
    mean = mean * 2.0**exponent
    if not _finite(mean):
        peak = float(y.abs().max()) * 2.0**exponent
        raise PredictError(f"y_train: the targets are too large: with max |y_train| = {peak:.3g} the {kernel} "
                           f"mean overflows {dtype}; scale the targets down (the mean is linear in them)")
    variance = None
    if cov is not None:
        cov = _symmetric(cov)
        if not _finite(cov):
            raise NonFinitePrediction(f"the {kernel} covariance came out non-finite: the "
                                      f"train kernel is too ill-conditioned at diag_reg="
                                      f"{f.diag_reg:g}; raise diag_reg")
        variance = torch.diagonal(cov, dim1=-2, dim2=-1).clone()
    return Prediction(t=t, kernel=kernel, mean=mean, covariance=cov, variance=variance)


# --------------------------------------------------------------------------------------------
# Learning rate, classification
# --------------------------------------------------------------------------------------------


def max_learning_rate(ntk_train_train: ArrayLike, y_train_size: int | None = None,
                      momentum: float = 0.0, eps: float = 1e-12,
                      factorization: Factorization | None = None) -> float:
    """Largest stable learning rate of full-batch GD on the MSE ``‖f − y‖² / (2 · n)``:
    ``2 (1 + momentum) · n / (λ_max(Θ_dd) + eps)`` with ``n = y_train_size`` (default N)
    (NT ``predict.max_learning_rate``; unregularized NTK).

    A ``factorization`` holding the eigenvalues of ``Θ_dd + εI`` gives ``λ_max`` without a
    second O(N³) eigendecomposition."""
    ntk = _as_tensor(ntk_train_train, torch.float64, None)
    if ntk.ndim != 2 or ntk.shape[0] != ntk.shape[1]:
        raise PredictError(f"ntk_train_train must be square, got {tuple(ntk.shape)}")
    factor = ntk.shape[0] if y_train_size is None else int(y_train_size)
    if factorization is not None and factorization.matrix == "ntk" and factorization.evals is not None:
        lam_max = float(factorization.evals[-1]) - factorization.epsilon
    else:
        _check_finite("ntk_train_train", ntk)
        lam_max = _largest_eigenvalue(ntk)
    return 2.0 * (1.0 + momentum) * factor / (lam_max + eps)


LANCZOS_FROM = 256  # points from which λ_max is found by Lanczos rather than by all N eigenvalues


def _largest_eigenvalue(a: Tensor) -> float:
    """``λ_max`` of a symmetric matrix. All eigenvalues cost O(N³) and two more N × N matrices
    (3.7 s for N = 2,000 on 2 cores, 10× a Cholesky); from ``LANCZOS_FROM`` points on a CPU,
    ARPACK's Lanczos (``eigsh``) converges to machine precision (2e-16 relative on ReLU NTKs) in a
    few dozen products with ``a`` (O(N²) each: 0.23 s for N = 2,000), started from the all-ones
    vector (deterministic, and close to the Perron vector of a kernel with positive entries)."""
    n = a.shape[0]
    if a.device.type == "cpu" and n >= LANCZOS_FROM:
        from scipy.sparse.linalg import LinearOperator, eigsh

        m = a.numpy()  # as an operator: eigsh given the array itself copies it
        products = LinearOperator((n, n), matvec=m.dot, dtype=m.dtype)
        return float(eigsh(products, k=1, which="LA", tol=0, v0=np.ones(n), return_eigenvectors=False)[0])
    return float(torch.linalg.eigvalsh(_symmetric(a))[-1])


def one_hot_targets(labels: ArrayLike, num_classes: int | None = None,
                    dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Integer labels (N,) → centered one-hot targets ``one_hot − 1/k`` (N, k).

    The centering makes each target row sum to 0, the usual regression encoding for
    kernel/NTK classification (e.g. Lee et al. 2019, Novak et al. 2019).
    """
    lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    if lab.ndim != 1 or lab.dtype.is_floating_point and not bool((lab == lab.round()).all()):
        raise PredictError("labels must be a 1-D array of integers")
    lab = lab.to(torch.long)
    if lab.numel() and int(lab.min()) < 0:
        raise PredictError("labels must be >= 0")
    k = int(num_classes) if num_classes is not None else (int(lab.max()) + 1 if lab.numel() else 0)
    if k < 2:
        raise PredictError(f"classification needs at least 2 classes, got {k}")
    if lab.numel() and int(lab.max()) >= k:
        raise PredictError(f"label {int(lab.max())} out of range for {k} classes")
    y = torch.nn.functional.one_hot(lab, k).to(dtype)
    return (y - 1.0 / k).to(device=device if device is not None else lab.device)


def class_targets(labels: ArrayLike) -> tuple[np.ndarray, list]:
    """Class labels (N,), of any values, as regression targets: the centered one-hot encoding
    (``one_hot_targets``) of each label's index among the sorted distinct labels, and those
    labels, in column order (the predicted class of a mean row is ``classes[row.argmax()]``).
    What ``targets: "one_hot"`` means to the service, the SDK and the CLI alike."""
    classes, index = np.unique(np.asarray(labels).reshape(-1), return_inverse=True)
    return one_hot_targets(index, len(classes)).numpy(), classes.tolist()


def labels_from_mean(mean: Tensor) -> Tensor:
    """Predicted labels: ``argmax`` over the output axis of the mean (..., M, k) → (..., M)."""
    return torch.as_tensor(mean).argmax(dim=-1)


# --------------------------------------------------------------------------------------------
# End to end from an architecture spec
# --------------------------------------------------------------------------------------------


def predict_from_spec(spec: dict, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike, *,
                      kernel: str = "ntk", t: Times = None, learning_rate: float = 1.0,
                      diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                      compute_cov: bool = True, dtype: torch.dtype = torch.float64,
                      device=None, budget=None) -> Prediction:
    """Compute the needed kernel blocks with ``ntk.engine.kernel_fn`` (only those
    :func:`required_kernels` names), factorize and :func:`predict`: the local equivalent of NT
    ``gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate, diag_reg,
    diag_reg_absolute_scale)(t, x_test, kernel, compute_cov)``. ``extras`` holds
    ``max_learning_rate``; ``budget`` is kernel_fn's (None: its default)."""
    from ntk.engine.kernel import Budget, kernel_fn  # late import: the kernel engine is optional here

    options = {"dtype": dtype, "device": device, "budget": budget or Budget()}

    need = required_kernels(kernel, compute_cov)
    # The NTK of the training set is always computed: it gives max_learning_rate.
    train_kernels = tuple(sorted(set(need["train_train"]) | {"ntk"}))
    k_dd = kernel_fn(spec, x_train, None, get=train_kernels, **options)
    k_td = kernel_fn(spec, x_test, x_train, get=need["test_train"], **options)
    k_tt = kernel_fn(spec, x_test, None, get=need["test_test"], **options) if need["test_test"] else None
    fact = factorize(k_dd, kernel, diag_reg=diag_reg,
                     diag_reg_absolute_scale=diag_reg_absolute_scale, method=method_for(t),
                     dtype=dtype, device=device)
    out = predict(fact, y_train, k_td, k_tt, kernel=kernel, t=t, learning_rate=learning_rate,
                  compute_cov=compute_cov)
    y_size = int(np.prod(np.shape(y_train))) if not isinstance(y_train, Tensor) else y_train.numel()
    out.extras["max_learning_rate"] = max_learning_rate(k_dd["ntk"], y_size, factorization=fact)
    return out
