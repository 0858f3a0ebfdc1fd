"""AsyncClient gives exactly the Client's answers, errors included, and runs calls concurrently."""

from __future__ import annotations

import asyncio
import inspect

import numpy as np
import pytest
from fake_server import FAST, Fault, FakeServer, fake_kernels

from ntk_client import AsyncClient, Client, JobFailed, NetworkError, ServerError, ValidationError, stax

ARCH = stax.serial(stax.Dense(32, w_std=1.2, b_std=0.1), stax.Erf(), stax.Dense(1))
SPEC = ARCH.to_dict()
rng = np.random.default_rng(7)
X1, X2, Y1 = rng.normal(size=(5, 4)), rng.normal(size=(3, 4)), rng.normal(size=(5, 1))
BIG = rng.normal(size=(100, 1300))  # over the 1 MB threshold: npz both ways

# Each scenario is (name, method, args, kwargs, fake-server setup) run through both clients.
SCENARIOS = [
    ("kernels", "kernels", (ARCH, X1, X2), {}, {}),
    ("kernels-float32-ntk", "kernels", (ARCH, X1), {"get": ["ntk"], "dtype": "float32"}, {}),
    ("kernels-monte-carlo", "kernels", (ARCH, X1), {"method": "monte_carlo", "samples": 4, "seed": 0}, {}),
    ("kernels-npz", "kernels", (ARCH, BIG), {"get": "nngp"}, {}),
    ("kernels-job", "kernels", (ARCH, X1), {}, {"job_polls": 3}),
    ("predict", "predict", (ARCH, X1, Y1, X2), {"diag_reg": 1e-3}, {}),
    ("predict-times", "predict", (ARCH, X1, Y1, X2), {"t": [0.1, 1.0, None], "diag_reg": 1e-3}, {}),
    ("predict-job-no-cov", "predict", (ARCH, X1, Y1, X2), {"t": 2.0, "compute_cov": False, "diag_reg": 1e-3},
     {"job_polls": 2}),
    ("predict-one-hot", "predict", (ARCH, X1, np.array([1, 0, 1, 2, 0]), X2),
     {"targets": "one_hot", "diag_reg": 1e-3}, {}),
    ("upload", "upload", (X1, Y1), {}, {}),
    ("health", "health", (), {}, {}),
]


def assert_same(a, b):
    if isinstance(a, dict):
        assert type(a) is type(b) and a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
        assert vars(a) == vars(b) if hasattr(a, "__dict__") else True
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b)
        for name in a.__dataclass_fields__:
            assert_same(getattr(a, name), getattr(b, name))
    else:
        assert a == b


@pytest.mark.parametrize("name, method, args, kwargs, setup", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_async_answers_equal_sync_answers(fake, name, method, args, kwargs, setup):
    for key, value in setup.items():
        setattr(fake.state, key, value)
    with Client(fake.url, **FAST) as c:
        sync_answer = getattr(c, method)(*args, **kwargs)
    sync_requests = [(r.method, r.path, r.query, r.headers.get("accept")) for r in fake.state.log]

    fake.state.reset()
    for key, value in setup.items():
        setattr(fake.state, key, value)

    async def run():
        async with AsyncClient(fake.url, **FAST) as c:
            return await getattr(c, method)(*args, **kwargs)

    async_answer = asyncio.run(run())
    assert_same(sync_answer, async_answer)
    # And they got there the same way: the same requests in the same order.
    assert [(r.method, r.path, r.query, r.headers.get("accept"))
            for r in fake.state.log] == sync_requests


def test_async_errors_equal_sync_errors(fake):
    def sync_error():
        with Client(fake.url, **FAST) as c, pytest.raises(ValidationError) as error:
            c.kernels({"layers": []}, X1)
        return error.value

    async def async_error():
        async with AsyncClient(fake.url, **FAST) as c:
            with pytest.raises(ValidationError) as error:
                await c.kernels({"layers": []}, X1)
        return error.value

    a, b = sync_error(), asyncio.run(async_error())
    assert (str(a), a.status, a.title, a.errors, a.problem) == (str(b), b.status, b.title, b.errors, b.problem)


def test_async_job_failure(fake):
    fake.state.job_polls, fake.state.job_outcome = 1, "failed"

    async def run():
        async with AsyncClient(fake.url, **FAST) as c:
            await c.kernels(ARCH, X1)

    with pytest.raises(JobFailed, match="crashed its worker"):
        asyncio.run(run())


def test_gather_runs_calls_concurrently(fake):
    """Several calls in flight at once, each following its own job, each getting its own answer."""
    fake.state.job_polls = 5
    inputs = [X1 * scale for scale in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]

    async def run():
        async with AsyncClient(fake.url, **{**FAST, "poll_interval": 0.05, "max_poll_interval": 0.05}) as c:
            return await asyncio.gather(*(c.kernels(ARCH, x) for x in inputs))

    answers = asyncio.run(run())
    for x, answer in zip(inputs, answers):
        np.testing.assert_array_equal(answer["ntk"], fake_kernels(SPEC, x)["ntk"])
    assert len(fake.state.jobs) == 6
    # In the server's log, jobs are in flight from their POST to their last poll. Serially, one
    # job would be followed to its end before the next is sent: never two in flight at once.
    log = [(r.method, r.path) for r in fake.state.log]
    last_poll = {}
    for i, (method, path) in enumerate(log):
        if method == "GET" and path.startswith("/v1/jobs/"):
            last_poll[path.split("/")[3]] = i
    submitted = [i for i, (method, path) in enumerate(log) if (method, path) == ("POST", "/v1/kernels")]
    in_flight = [sum(1 for s in submitted if s <= i) - sum(1 for end in last_poll.values() if end < i)
                 for i in range(len(log))]
    assert len(submitted) == 6 and max(in_flight) >= 2


def test_async_retries_503(fake):
    fake.state.faults.append(Fault("/v1/kernels", status=503, times=2))

    async def run():
        async with AsyncClient(fake.url, **FAST) as c:
            return await c.kernels(ARCH, X1)

    np.testing.assert_array_equal(asyncio.run(run())["nngp"], fake_kernels(SPEC, X1)["nngp"])
    assert len(fake.state.requests("POST", "/v1/kernels")) == 3


def test_async_retries_are_bounded(fake):
    fake.state.faults.append(Fault("/healthz", status=503, times=100))

    async def run():
        async with AsyncClient(fake.url, **FAST) as c:
            await c.health()

    with pytest.raises(ServerError):
        asyncio.run(run())
    assert len(fake.state.requests("GET", "/healthz")) == FAST["max_retries"] + 1


def test_async_rides_out_a_restart():
    with FakeServer() as server:
        server.state.job_polls = 30

        async def run():
            async with AsyncClient(server.url, **{**FAST, "max_retries": 8, "backoff": 0.05, "max_backoff": 0.5}) as c:
                call = asyncio.ensure_future(c.kernels(ARCH, X1))
                while len(server.state.requests("GET", "/v1/jobs/")) < 3:
                    await asyncio.sleep(0.005)
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(0.5)
                await asyncio.to_thread(server.start)
                return await call

        np.testing.assert_array_equal(asyncio.run(run())["ntk"], fake_kernels(SPEC, X1)["ntk"])


def test_async_unreachable_server():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))

        async def run():
            async with AsyncClient(f"http://127.0.0.1:{sock.getsockname()[1]}", **FAST) as c:
                await c.health()

        with pytest.raises(NetworkError):
            asyncio.run(run())


def test_async_client_works_under_trio(fake):
    trio = pytest.importorskip("trio")

    async def run():
        async with AsyncClient(fake.url, **FAST) as c:
            return await c.kernels(ARCH, X1)

    fake.state.job_polls = 2  # sleeps between polls go through trio too
    np.testing.assert_array_equal(trio.run(run)["ntk"], fake_kernels(SPEC, X1)["ntk"])


def test_the_twins_have_the_same_methods_signatures_and_docs():
    public = {name for name in dir(Client) if not name.startswith("_")} - {"close"}
    assert public == {name for name in dir(AsyncClient) if not name.startswith("_")} - {"aclose"}
    for name in public:
        sync, asynchronous = getattr(Client, name), getattr(AsyncClient, name)
        if not callable(sync):
            continue
        assert inspect.iscoroutinefunction(asynchronous), name
        assert inspect.signature(sync) == inspect.signature(asynchronous), name
        assert sync.__doc__ and sync.__doc__ == asynchronous.__doc__, name
