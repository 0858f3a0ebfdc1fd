"""The SDK against the real service: answers through HTTP equal the engine's, computed here.

Uses the session fixture ``service_url`` (a running ``ntk serve``) from tests/conftest.py, and
skips when that fixture or the engine is not there.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ntk_client import AsyncClient, Client, NotFound, ValidationError, dataset_id, stax

engine = pytest.importorskip("ntk.engine", reason="the kernel engine (torch) is not installed")

ARCH = stax.serial(stax.Dense(512, w_std=1.5, b_std=0.05), stax.Relu(), stax.Dense(1, w_std=1.5, b_std=0.05))
CONV = stax.serial(stax.Conv(8, (3, 3), padding="SAME", w_std=1.3, b_std=0.1), stax.Erf(),
                   stax.AvgPool((2, 2)), stax.Flatten(), stax.Dense(1))
rng = np.random.default_rng(2024)
X_TRAIN, X_TEST = rng.normal(size=(12, 4)), rng.normal(size=(5, 4))
Y_TRAIN = np.sin(X_TRAIN[:, :2])
IMAGES = rng.normal(size=(4, 6, 6, 2))
RTOL, ATOL = 1e-10, 1e-12  # float64 both ways; JSON and npz carry every bit


@pytest.fixture(scope="module")
def url(request):
    try:
        return request.getfixturevalue("service_url")
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py has no service_url fixture (a running `ntk serve`) yet")


@pytest.fixture
def client(url):
    with Client(url, progress=False, max_retries=3, backoff=0.2) as c:
        yield c


def engine_kernels(arch, x1, x2=None, get=("nngp", "ntk")):
    return {name: k.cpu().numpy() for name, k in engine.kernel_fn(arch.to_dict(), x1, x2, get=get).items()}


def engine_prediction(arch, x_train, y_train, x_test, **options):
    from ntk.engine.predict import predict_from_spec

    return predict_from_spec(arch.to_dict(), x_train, y_train, x_test, **options).as_numpy()


def assert_kernels_equal(got, expected):
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_health(client):
    assert client.health()["status"] == "ok"


def test_kernels_inline(client):
    assert_kernels_equal(client.kernels(ARCH, X_TRAIN, X_TEST), engine_kernels(ARCH, X_TRAIN, X_TEST))
    assert_kernels_equal(client.kernels(ARCH, X_TRAIN), engine_kernels(ARCH, X_TRAIN))


def test_kernels_of_a_convolutional_network(client):
    got = client.kernels(CONV, IMAGES, get="ntk")
    assert list(got) == ["ntk"]
    assert_kernels_equal(got, engine_kernels(CONV, IMAGES, get=("ntk",)))


def test_kernels_through_datasets_and_npz(url):
    # binary_threshold=0: every array is uploaded as npz and every answer asked for as npz.
    with Client(url, progress=False, binary_threshold=0) as c:
        got = c.kernels(ARCH, X_TRAIN, X_TEST)
    assert_kernels_equal(got, engine_kernels(ARCH, X_TRAIN, X_TEST))
    assert got.shape == (12, 5) and isinstance(got.cached, bool) and got.id  # npz metadata decoded


def test_client_and_server_compute_the_same_dataset_id(client):
    """The SDK skips uploads by hashing locally: the server must hash the same way."""
    for x, y in [(X_TRAIN, None), (X_TRAIN, Y_TRAIN), (X_TEST.astype(np.float32), None),
                 (X_TRAIN, np.arange(12))]:
        assert client.upload(x, y) == dataset_id(x, y)
        info = client.dataset(dataset_id(x, y))
        assert info["id"] == dataset_id(x, y) and list(info["x_shape"]) == list(x.shape)
    client.delete_dataset(dataset_id(X_TRAIN, np.arange(12)))
    with pytest.raises(NotFound):
        client.dataset(dataset_id(X_TRAIN, np.arange(12)))


@pytest.mark.parametrize("options", [
    dict(t=None, diag_reg=1e-4),
    dict(t=[0.5, 5.0, 50.0], kernel="nngp", diag_reg=1e-3, learning_rate=0.5),
    dict(t=2.0, diag_reg=1e-2, diag_reg_absolute_scale=True, compute_cov=False),
], ids=["t=inf", "times-nngp", "t=2-no-cov"])
def test_predict(client, options):
    got = client.predict(ARCH, X_TRAIN, Y_TRAIN, X_TEST, **options)
    expected = engine_prediction(ARCH, X_TRAIN, Y_TRAIN, X_TEST, **options)
    np.testing.assert_allclose(got.mean, expected["mean"], rtol=1e-8, atol=1e-10)
    if options.get("compute_cov", True):
        np.testing.assert_allclose(got.covariance, expected["covariance"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(got.std, np.sqrt(np.maximum(expected["variance"], 0)), rtol=1e-8, atol=1e-8)
    else:
        assert got.covariance is None and got.std is None


def test_predict_with_the_training_set_uploaded(url):
    with Client(url, progress=False, binary_threshold=0) as c:
        got = c.predict(ARCH, X_TRAIN, Y_TRAIN, X_TEST, diag_reg=1e-4)
    expected = engine_prediction(ARCH, X_TRAIN, Y_TRAIN, X_TEST, diag_reg=1e-4)
    np.testing.assert_allclose(got.mean, expected["mean"], rtol=1e-8, atol=1e-10)


def test_validation_errors_name_the_path(client):
    with pytest.raises(ValidationError) as error:
        client.kernels({"layers": []}, X_TRAIN)
    assert error.value.status == 422 and any("layers" in e["path"] for e in error.value.errors)
    with pytest.raises(ValidationError) as error:
        client.kernels(ARCH, X_TRAIN, rng.normal(size=(3, 7)))
    assert error.value.status == 422 and error.value.errors


def test_unknown_job(client):
    with pytest.raises(NotFound):
        client.job("0" * 32)


def test_async_client_gives_the_same_answers(url, client):
    async def run():
        async with AsyncClient(url, progress=False) as c:
            return await asyncio.gather(c.kernels(ARCH, X_TRAIN, X_TEST),
                                        c.predict(ARCH, X_TRAIN, Y_TRAIN, X_TEST, diag_reg=1e-4))

    kernels, prediction = asyncio.run(run())
    assert_kernels_equal(kernels, client.kernels(ARCH, X_TRAIN, X_TEST))
    np.testing.assert_array_equal(prediction.mean, client.predict(ARCH, X_TRAIN, Y_TRAIN, X_TEST, diag_reg=1e-4).mean)


def test_jobs_are_followed_to_the_same_answer(client):
    # wait=0: the service answers 202 with a job at once; the SDK polls it and fetches the result.
    seen = []
    got = client.kernels(CONV, IMAGES, wait=0, progress=seen.append)
    assert_kernels_equal(got, engine_kernels(CONV, IMAGES))
    assert seen and seen[-1].status == "succeeded"
    prediction = client.predict(ARCH, X_TRAIN, Y_TRAIN, X_TEST, diag_reg=1e-4, wait=0)
    expected = engine_prediction(ARCH, X_TRAIN, Y_TRAIN, X_TEST, diag_reg=1e-4)
    np.testing.assert_allclose(prediction.mean, expected["mean"], rtol=1e-8, atol=1e-10)
