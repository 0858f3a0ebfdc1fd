"""``ntk/engine/predict.py`` against neural-tangents 0.6.5 (fixtures from
``tests/engine/generate_predict_fixtures.py``) plus properties the oracle cannot state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntk.engine import predict as P
from ntk.worker.store import factorization_arrays, factorization_from_arrays, factorization_key

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "predict"
CASES = sorted(p.stem for p in FIXTURES.glob("*.npz"))
RTOL = 1e-6


def load(name: str) -> tuple[dict, dict]:
    with np.load(FIXTURES / f"{name}.npz") as d:
        arrays = {k: d[k] for k in d.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def blocks_for(d: dict, kernel: str, compute_cov: bool):
    """Only the blocks ``required_kernels`` names: proves nothing else is needed."""
    need = P.required_kernels(kernel, compute_cov)
    dd = {g: d[f"{g}_train_train"] for g in need["train_train"]}
    td = {g: d[f"{g}_test_train"] for g in need["test_train"]}
    tt = {g: d[f"{g}_test_test"] for g in need["test_test"]} or None
    return dd, td, tt


def run_case(d: dict, meta: dict, roundtrip: bool = False) -> P.Prediction:
    kernel, cov, t = meta["kernel"], meta["compute_cov"], meta["t"]
    dd, td, tt = blocks_for(d, kernel, cov)
    fact = P.factorize(dd, kernel, diag_reg=meta["diag_reg"],
                       diag_reg_absolute_scale=meta["diag_reg_absolute_scale"],
                       method=P.method_for(t))
    if roundtrip:
        fact = factorization_from_arrays(factorization_arrays(fact))
    return P.predict(fact, d["y_train"], td, tt, kernel=kernel, t=t,
                     learning_rate=meta["learning_rate"], compute_cov=cov)


def assert_close(actual: torch.Tensor, expected: np.ndarray, what: str):
    actual = actual.cpu().numpy()
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    atol = 1e-12 * float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol, err_msg=what)


def test_fixtures_exist():
    assert len(CASES) >= 100, "run tests/engine/generate_predict_fixtures.py with /tmp/nt"
    size = sum(p.stat().st_size for p in FIXTURES.iterdir())
    assert size < 2e6


@pytest.mark.parametrize("name", CASES)
def test_matches_neural_tangents(name):
    d, meta = load(name)
    if meta["expect_nan"]:
        # NT returns NaN (Cholesky of an indefinite kernel); we raise a clear error instead.
        assert np.isnan(d["mean"]).any()
        dd, _, _ = blocks_for(d, meta["kernel"], meta["compute_cov"])
        with pytest.raises(P.NotPositiveDefinite, match="raise diag_reg"):
            P.factorize(dd, meta["kernel"], diag_reg=meta["diag_reg"],
                        diag_reg_absolute_scale=meta["diag_reg_absolute_scale"],
                        method=P.method_for(meta["t"]))
        return
    out = run_case(d, meta, roundtrip=CASES.index(name) % 2 == 0)
    assert_close(out.mean, d["mean"], f"{name}: mean")
    if meta["compute_cov"]:
        assert_close(out.covariance, d["covariance"], f"{name}: covariance")
        assert_close(out.variance, np.diagonal(d["covariance"], axis1=-2, axis2=-1).copy(),
                     f"{name}: variance")
    else:
        assert out.covariance is None and out.variance is None
    assert out.t == meta["t"]
    mlr = P.max_learning_rate(d["ntk_train_train"], d["y_train"].size)
    assert mlr == pytest.approx(meta["max_learning_rate"], rel=RTOL)


# ---------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------


def synthetic(n=9, m=5, k=3, seed=0, jitter=1e-2):
    """PSD joint NNGP / NTK kernels over n train + m test points, and targets."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n + m, 6))
    nngp = f @ f.T / 6 + jitter * np.eye(n + m)
    h = rng.standard_normal((n + m, 10))
    ntk = nngp + h @ h.T / 10
    y = rng.standard_normal((n, k))

    def split(kk):
        return kk[:n, :n], kk[n:, :n], kk[n:, n:]

    (kd, kt, ktt), (td, tt_, ttt) = split(nngp), split(ntk)
    return ({"nngp": kd, "ntk": td}, {"nngp": kt, "ntk": tt_}, {"nngp": ktt, "ntk": ttt}, y)


@pytest.mark.parametrize("kernel", P.KERNEL_MODES)
@pytest.mark.parametrize("jitter", [1e-2, 0.0], ids=["nngp definite", "nngp singular"])
def test_time_list_equals_single_calls(kernel, jitter):
    """Ten times at once take the rotated path of ``_ntk_cov_t`` (through the Cholesky factor
    of K_dd, or through Vᵀ K_dd V where K_dd is singular); one time at once the direct one."""
    dd, td, tt, y = synthetic(jitter=jitter)
    fact = P.factorize(dd, kernel, diag_reg=1e-3, method="eigh")
    ts = [0.0, 0.01, 0.1, 0.5, 1.0, 3.0, 10.0, 100.0, 1e4, math.inf]
    many = P.predict(fact, y, td, tt, kernel=kernel, t=ts, learning_rate=0.7)
    assert many.mean.shape == (10, 5, 3) and many.covariance.shape == (10, 5, 5)
    assert many.variance.shape == (10, 5)
    for i, t in enumerate(ts):
        one = P.predict(fact, y, td, tt, kernel=kernel, t=t, learning_rate=0.7)
        assert one.mean.shape == (5, 3) and one.covariance.shape == (5, 5)
        torch.testing.assert_close(many.mean[i], one.mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(many.covariance[i], one.covariance, rtol=1e-12, atol=1e-14)
    # t = inf via eigh == t = None via Cholesky (the same limit, two factorizations).
    inf = P.predict(P.factorize(dd, kernel, diag_reg=1e-3), y, td, tt, kernel=kernel, t=None)
    torch.testing.assert_close(many.mean[-1], inf.mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(many.covariance[-1], inf.covariance, rtol=1e-9, atol=1e-10)
    # t = 0: the prior (mean 0, covariance = the init kernel on the test set).
    torch.testing.assert_close(many.mean[0], torch.zeros(5, 3, dtype=torch.float64))
    torch.testing.assert_close(many.covariance[0],
                               torch.as_tensor(tt[P.init_kernel(kernel)]), rtol=1e-12, atol=1e-12)


def test_time_shape_and_learning_rate_scale_time():
    dd, td, tt, y = synthetic()
    fact = P.factorize(dd, "ntk", method="eigh")
    a = P.predict(fact, y, td, tt, t=[[1.0, 2.0], [3.0, 4.0]], learning_rate=0.5)
    assert a.mean.shape == (2, 2, 5, 3) and a.covariance.shape == (2, 2, 5, 5)
    b = P.predict(fact, y, td, tt, t=2.0, learning_rate=1.0)   # τ = lr · t
    torch.testing.assert_close(a.mean[1, 1], b.mean, rtol=1e-13, atol=1e-15)


def test_spectral_weights_limits():
    ev = torch.tensor([-1e-3, 0.0, 1e-300, 2.0], dtype=torch.float64)
    phi = P.spectral_weights(ev, 6.0, 3)
    assert torch.isfinite(phi).all()
    assert phi[0] == 0.0                                  # NT clips negative eigenvalues
    assert phi[1] == pytest.approx(2.0) and phi[2] == pytest.approx(2.0)   # limit τ/n
    assert phi[3] == pytest.approx((1 - math.exp(-4.0)) / 2.0, rel=1e-15)
    with pytest.raises(P.NotPositiveDefinite):
        P.spectral_weights(ev, math.inf, 3)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def indefinite():
    dd, td, tt, y = synthetic(jitter=0.0)
    for g in dd:
        w, v = np.linalg.eigh(dd[g])
        dd[g] = dd[g] - (w[0] + 0.1) * np.outer(v[:, 0], v[:, 0])
    return dd, td, tt, y


@pytest.mark.parametrize("kernel", P.KERNEL_MODES)
def test_not_positive_definite_raises(kernel):
    dd, td, tt, y = indefinite()
    with pytest.raises(P.NotPositiveDefinite, match="raise diag_reg") as e:
        P.factorize(dd, kernel, diag_reg=0.0)
    assert isinstance(e.value, ValueError)
    # t = inf through eigh: NT gives NaN, we raise.
    fact = P.factorize(dd, kernel, method="eigh")
    with pytest.raises(P.NotPositiveDefinite):
        P.predict(fact, y, td, tt, kernel=kernel, t=[1.0, math.inf])
    # Finite t: NT clips the negative eigenvalue; the answer is finite.
    out = P.predict(fact, y, td, tt, kernel=kernel, t=[0.0, 1.0, 100.0])
    assert torch.isfinite(out.mean).all() and torch.isfinite(out.covariance).all()
    # Enough diag_reg fixes it.
    P.predict(P.factorize(dd, kernel, diag_reg=1.0), y, td, tt, kernel=kernel)


def test_non_finite_prediction_is_reported():
    dd, td, tt, y = synthetic()
    fact = P.factorize(dd, "nngp", diag_reg=1e-3)
    fact.cholesky = fact.cholesky.clone()
    fact.cholesky[3, 3] = 1e-320       # a factor that makes the solve overflow
    with pytest.raises(P.NonFinitePrediction, match="raise diag_reg"):
        P.predict(fact, y, td, tt, kernel="nngp")


def test_argument_errors():
    dd, td, tt, y = synthetic()
    chol = P.factorize(dd, "ntk")
    with pytest.raises(P.PredictError, match="method='eigh'"):
        P.predict(chol, y, td, tt, t=1.0)
    with pytest.raises(P.PredictError, match=">= 0"):
        P.predict(P.factorize(dd, "ntk", method="eigh"), y, td, tt, t=[1.0, -1.0])
    with pytest.raises(P.PredictError, match="learning_rate"):
        P.predict(P.factorize(dd, "ntk", method="eigh"), y, td, tt, t=1.0, learning_rate=0.0)
    with pytest.raises(P.PredictError, match="'nngp' kernel"):
        P.predict(chol, y, td, tt, kernel="nngp")
    with pytest.raises(P.PredictError, match="unknown kernel mode"):
        P.factorize(dd, "gp")
    with pytest.raises(P.PredictError, match="missing test-test"):
        P.predict(chol, y, td, None, kernel="ntk")
    with pytest.raises(P.PredictError, match="y_train"):
        P.predict(chol, y[:-1], td, tt)
    with pytest.raises(P.PredictError, match="nngp kernel in the factorization"):
        P.predict(P.factorize({"ntk": dd["ntk"]}, "ntk"), y, td, tt)
    with pytest.raises(P.PredictError, match="non-finite"):
        P.factorize({"ntk": np.full((3, 3), np.nan)}, "ntk")
    with pytest.raises(P.PredictError, match="diag_reg"):
        P.factorize(dd, "ntk", diag_reg=-1.0)
    # ntk without covariance needs no NNGP anywhere.
    P.predict(P.factorize({"ntk": dd["ntk"]}, "ntk"), y, {"ntk": td["ntk"]}, None,
              compute_cov=False)


def test_required_kernels():
    r = P.required_kernels
    assert r("ntk", True) == {"train_train": ("nngp", "ntk"), "test_train": ("nngp", "ntk"),
                              "test_test": ("nngp",)}
    assert r("ntk", False) == {"train_train": ("ntk",), "test_train": ("ntk",), "test_test": ()}
    assert r("nngp", True) == {"train_train": ("nngp",), "test_train": ("nngp",),
                               "test_test": ("nngp",)}
    assert r("ntkgp", True) == {"train_train": ("ntk",), "test_train": ("ntk",),
                                "test_test": ("ntk",)}
    assert r("ntkgp", False)["test_test"] == ()


# ---------------------------------------------------------------------------------------------
# Serialization, classification, max learning rate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cholesky", "eigh", "both"])
@pytest.mark.parametrize("kernel", P.KERNEL_MODES)
def test_factorization_roundtrip(tmp_path, kernel, method):
    dd, td, tt, y = synthetic()
    fact = P.factorize(dd, kernel, diag_reg=1e-2, diag_reg_absolute_scale=True, method=method)
    arrays = factorization_arrays(fact)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    np.savez(tmp_path / "f.npz", **arrays)
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        back = factorization_from_arrays(z)
    assert (back.matrix, back.n, back.diag_reg, back.diag_reg_absolute_scale, back.epsilon,
            back.methods) == (fact.matrix, fact.n, fact.diag_reg, fact.diag_reg_absolute_scale,
                              fact.epsilon, fact.methods)
    assert (back.nngp_train_train is None) == (kernel != "ntk")
    for t in ([None] if method == "cholesky" else [1.0] if method == "eigh" else [None, 1.0]):
        a = P.predict(fact, y, td, tt, kernel=kernel, t=t)
        b = P.predict(back, y, td, tt, kernel=kernel, t=t)
        # Equal to rounding, not bitwise: MKL may take another path for differently aligned memory.
        torch.testing.assert_close(b.mean, a.mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(b.covariance, a.covariance, rtol=1e-12, atol=1e-14)
        assert back.serves(kernel, t, True)
    assert fact.nbytes > 0
    with pytest.raises(P.PredictError):
        factorization_from_arrays({**arrays, "format": np.array("other")})


def test_factorization_key():
    k = dict(diag_reg=1e-4, diag_reg_absolute_scale=False, method="cholesky")
    a = factorization_key("abc", "ntk", **k)
    assert a == factorization_key("abc", "ntk", **k)
    assert a != factorization_key("abc", "ntkgp", **k)      # no NNGP rides along
    assert a != factorization_key("abc", "ntk", **{**k, "diag_reg": 1e-3})
    assert a != factorization_key("abd", "ntk", **k)
    assert (factorization_key("abc", "ntk", compute_cov=False, **k)
            == factorization_key("abc", "ntkgp", **k))


def test_one_hot_targets_and_labels():
    y = P.one_hot_targets([0, 2, 1, 2])
    expected = np.array([[2, -1, -1], [-1, -1, 2], [-1, 2, -1], [-1, -1, 2]]) / 3
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-15)
    assert y.dtype == torch.float64
    np.testing.assert_allclose(y.sum(1).numpy(), 0.0, atol=1e-15)
    assert P.one_hot_targets(np.array([1, 0]), num_classes=4).shape == (2, 4)
    assert P.labels_from_mean(y).tolist() == [0, 2, 1, 2]
    assert P.labels_from_mean(torch.stack([y, -y])).shape == (2, 4)
    for bad in ([0.5, 1.0], [-1, 0], [[0, 1]], [0, 0]):
        with pytest.raises(P.PredictError):
            P.one_hot_targets(bad)
    with pytest.raises(P.PredictError):
        P.one_hot_targets([0, 3], num_classes=3)


def test_classification_end_to_end():
    """Well-separated classes regressed on centered one-hot targets come back as labels."""
    rng = np.random.default_rng(3)
    centers = np.eye(3) * 6
    lab_train, lab_test = np.repeat(np.arange(3), 4), np.arange(3)
    x = np.concatenate([centers[lab_train], centers[lab_test]]) + 0.1 * rng.standard_normal((15, 3))
    k = np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1))
    y = P.one_hot_targets(lab_train)
    fact = P.factorize({"nngp": k[:12, :12]}, "nngp", diag_reg=1e-6)
    out = P.predict(fact, y, {"nngp": k[12:, :12]}, kernel="nngp", compute_cov=False)
    assert P.labels_from_mean(out.mean).tolist() == lab_test.tolist()


def test_max_learning_rate_formula():
    ntk = np.diag([1.0, 4.0, 2.0])
    assert P.max_learning_rate(ntk, 6) == pytest.approx(2 * 6 / 4.0, rel=1e-12)
    assert P.max_learning_rate(ntk) == pytest.approx(2 * 3 / 4.0, rel=1e-12)
    assert P.max_learning_rate(ntk, 6, momentum=0.5) == pytest.approx(3 * 6 / 4.0, rel=1e-12)


def test_max_learning_rate_reads_the_eigenvalues_of_an_ntk_factorization():
    dd, _, _, _ = synthetic()
    direct = P.max_learning_rate(dd["ntk"], 27)
    for kernel, method in [("ntk", "eigh"), ("ntkgp", "both"), ("nngp", "eigh"), ("ntk", "cholesky")]:
        fact = P.factorize(dd, kernel, diag_reg=1e-2, method=method)
        assert P.max_learning_rate(dd["ntk"], 27, factorization=fact) == pytest.approx(direct, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 10), m=st.integers(1, 6), k=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1), kernel=st.sampled_from(P.KERNEL_MODES),
       t=st.one_of(st.none(), st.floats(0, 1e4)),
       lr=st.floats(0.01, 10), log_reg=st.floats(-8, 0),
       absolute=st.booleans(), rank=st.integers(1, 12))
def test_covariance_symmetric_psd(n, m, k, seed, kernel, t, lr, log_reg, absolute, rank):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n + m, rank))
    nngp = f @ f.T / rank + 1e-3 * np.eye(n + m)
    h = rng.standard_normal((n + m, rank))
    ntk = nngp + h @ h.T / rank
    y = rng.standard_normal((n, k))
    dd = {"nngp": nngp[:n, :n], "ntk": ntk[:n, :n]}
    td = {"nngp": nngp[n:, :n], "ntk": ntk[n:, :n]}
    tt = {"nngp": nngp[n:, n:], "ntk": ntk[n:, n:]}
    fact = P.factorize(dd, kernel, diag_reg=10.0**log_reg, diag_reg_absolute_scale=absolute,
                       method=P.method_for(t))
    out = P.predict(fact, y, td, tt, kernel=kernel, t=t, learning_rate=lr)
    cov = out.covariance.numpy()
    scale = max(np.abs(ntk).max(), 1.0)
    assert out.mean.shape == (m, k) and cov.shape == (m, m)
    assert np.isfinite(cov).all() and np.isfinite(out.mean.numpy()).all()
    np.testing.assert_allclose(cov, cov.T, rtol=0, atol=1e-12 * scale)
    assert np.linalg.eigvalsh(cov).min() >= -1e-8 * scale
    np.testing.assert_array_equal(out.variance.numpy(), np.diagonal(cov))


# ---------------------------------------------------------------------------------------------
# End to end: architecture spec -> kernels (ntk.engine.kernel_fn) -> prediction
# ---------------------------------------------------------------------------------------------

E2E = [c for c in CASES if load(c)[1]["e2e"]]


@pytest.mark.parametrize("name", E2E)
def test_predict_from_spec_matches_neural_tangents(name):
    engine = pytest.importorskip("ntk.engine")
    if not hasattr(engine, "kernel_fn"):
        pytest.skip("ntk.engine.kernel_fn not available yet")
    d, meta = load(name)
    out = P.predict_from_spec(
        meta["spec"], d["x_train"], d["y_train"], d["x_test"], kernel=meta["kernel"],
        t=meta["t"], learning_rate=meta["learning_rate"], diag_reg=meta["diag_reg"],
        diag_reg_absolute_scale=meta["diag_reg_absolute_scale"],
        compute_cov=meta["compute_cov"], device="cpu")
    assert_close(out.mean, d["mean"], f"{name}: mean")
    if meta["compute_cov"]:
        assert_close(out.covariance, d["covariance"], f"{name}: covariance")
    if P.dynamics_kernel(meta["kernel"]) == "ntk":
        assert out.extras["max_learning_rate"] == pytest.approx(meta["max_learning_rate"],
                                                                rel=RTOL)


# The case: targets of ±1e308 used to be answered "not positive definite, raise diag_reg".
HUGE_MLP = {"layers": [{"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                       {"type": "Dense", "out_dim": 1, "w_std": 1.5, "b_std": 0.05}]}
HUGE_X = np.array([[0.1, 0.2, 0.3], [0.4, -0.5, 0.6]])
HUGE_Y = np.array([[1e308], [-1e308]])


@pytest.mark.parametrize("t", [None, [1.0, math.inf]], ids=["t=None (Cholesky)", "finite t (eigh)"])
def test_targets_whose_prediction_overflows_are_named(t):
    """A mean beyond float64's range is the targets' doing when the kernel is well conditioned."""
    with pytest.raises(P.PredictError, match="y_train") as raised:
        P.predict_from_spec(HUGE_MLP, HUGE_X, HUGE_Y, np.array([[1.0, 1.0, 1.0]]), t=t, compute_cov=False)
    assert not isinstance(raised.value, P.NotPositiveDefinite)
    assert "diag_reg" not in str(raised.value)


def test_huge_targets_whose_prediction_fits_are_answered():
    """At a training point (t = ∞, no regularization) the mean is that point's target, 1e308."""
    out = P.predict_from_spec(HUGE_MLP, HUGE_X, HUGE_Y, HUGE_X[:1], compute_cov=False)
    np.testing.assert_allclose(out.mean.numpy(), HUGE_Y[:1], rtol=1e-6)


def test_scaling_the_targets_by_a_power_of_two_scales_the_mean_exactly():
    dd, td, tt, y = synthetic()
    for t in (None, 2.0):
        fact = P.factorize(dd, "ntk", diag_reg=1e-3, method=P.method_for(t))
        plain = P.predict(fact, y, td, tt, kernel="ntk", t=t, compute_cov=False).mean
        scaled = P.predict(fact, y * 2.0**900, td, tt, kernel="ntk", t=t, compute_cov=False).mean
        assert torch.equal(scaled, plain * 2.0**900)
