"""A small but real HTTP server speaking the fragment of SPEC §3 that the SDK uses.

It is not the service: its "kernels" are a cheap stand-in formula (:func:`fake_kernels`) and its
predictions plain linear algebra on them (:func:`fake_predict`), so that tests can check the SDK
carries arrays faithfully both ways, inline and as npz. Everything else is scripted through
:class:`FakeState`: jobs that take a given number of polls, jobs that fail or get cancelled,
canned fault answers (503, 429 + Retry-After, slow answers), API keys. Every request is logged.

:class:`FakeServer` runs the app with uvicorn in a thread on 127.0.0.1 and can be stopped and
started again on the same port, keeping its state, the way the real service keeps its state in
Redis across a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

NPZ = "application/x-npz"
PROBLEM = "application/problem+json"

#: Client options for tests against this server: short backoffs and polls, no progress bar.
FAST = dict(max_retries=3, backoff=0.01, max_backoff=0.05, poll_interval=0.01, max_poll_interval=0.02,
            progress=False, timeout=10.0)


# -- the stand-in mathematics ------------------------------------------------------------------


def _first_dense(arch: dict[str, Any]) -> dict[str, Any]:
    return next((layer for layer in arch["layers"] if layer.get("type") == "Dense"), {})


def fake_kernels(arch: dict[str, Any], x1: np.ndarray, x2: np.ndarray | None = None, *,
                 method: str = "analytic", dtype: str | None = None) -> dict[str, np.ndarray]:
    """Dot-product "kernels" scaled by the first Dense layer's w_std and b_std, so that the
    architecture visibly matters. Monte Carlo adds standard errors."""
    x2 = x1 if x2 is None else x2
    a, b = x1.reshape(len(x1), -1).astype(np.float64), x2.reshape(len(x2), -1).astype(np.float64)
    dense = _first_dense(arch)
    w_std, b_std = dense.get("w_std", 1.0), dense.get("b_std") or 0.0
    dot = a @ b.T / a.shape[1]
    kernels = {"nngp": w_std**2 * dot + b_std**2}
    kernels["ntk"] = kernels["nngp"] + dot
    if method == "monte_carlo":
        kernels["nngp_stderr"] = 0.01 * np.abs(kernels["nngp"])
        kernels["ntk_stderr"] = 0.01 * np.abs(kernels["ntk"])
    return {name: k.astype(dtype or np.float64) for name, k in kernels.items()}


def fake_predict(arch, x_train, y_train, x_test, *, t=None, kernel="ntk", diag_reg=0.0,
                 learning_rate=1.0, diag_reg_absolute_scale=False, compute_cov=True, targets=None,
                 dtype=None) -> dict[str, Any]:
    """Kernel regression with the fake kernels, shaped like the real answer (mean (T,)M,k ...)."""
    name = "ntk" if kernel == "ntkgp" else kernel
    k_train = fake_kernels(arch, x_train)[name]
    k_cross = fake_kernels(arch, x_test, x_train)[name]
    k_test = fake_kernels(arch, x_test)[name]
    answer: dict[str, Any] = {"t": t}
    if targets == "one_hot":
        labels, index = np.unique(y_train, return_inverse=True)
        y = np.eye(len(labels))[index]
        answer["labels"] = labels
    else:
        y = np.asarray(y_train, dtype=np.float64).reshape(len(y_train), -1)
    n = len(k_train)
    reg = diag_reg if diag_reg_absolute_scale else diag_reg * np.trace(k_train) / n
    lam, v = np.linalg.eigh(k_train + reg * np.eye(n))
    if lam[0] <= 1e-10 * lam[-1]:
        raise ValueError("the kernel is not positive definite; raise diag_reg")
    projected = k_cross @ v

    def at(time: float | None) -> tuple[np.ndarray, np.ndarray]:
        if time is None:
            fit, fit2 = 1 / lam, 1 / lam
        else:
            fit = -np.expm1(-learning_rate * lam * time) / lam
            fit2 = -np.expm1(-2 * learning_rate * lam * time) / lam
        return projected @ (fit[:, None] * (v.T @ y)), k_test - (projected * fit2) @ projected.T

    times = t if isinstance(t, list) else [t]
    means, covs = zip(*(at(time) for time in times))
    mean, cov = (np.stack(means), np.stack(covs)) if isinstance(t, list) else (means[0], covs[0])
    answer["mean"] = mean.astype(dtype or np.float64)
    if compute_cov:
        answer["covariance"] = cov.astype(dtype or np.float64)
        answer["variance"] = np.diagonal(cov, axis1=-2, axis2=-1).astype(dtype or np.float64)
    answer["max_learning_rate"] = float(2 / lam[-1])
    return answer


def content_hash(x: np.ndarray, y: np.ndarray | None) -> str:
    """The dataset id recipe both sides implement (SPEC §3; ntk_client._arrays docstring)."""
    h = hashlib.sha256()
    for name, a in (("x", x), ("y", y)):
        if a is not None:
            h.update(f"{name}:{a.dtype.str}:{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# -- scripted behaviour ------------------------------------------------------------------------


@dataclass
class Fault:
    """A canned answer to the next ``times`` requests matching ``method`` and ``path`` (a prefix)."""

    path: str
    status: int = 503
    method: str = "*"
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    problem: dict[str, Any] | None = None
    html: str | None = None  # answer this text/html body instead of a problem (a proxy's error page)
    delay: float = 0.0  # seconds to stall first; status 0 means "then answer normally"


@dataclass
class Logged:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body_size: int


@dataclass
class FakeJob:
    id: str
    kind: str
    answer: dict[str, Any]
    polls_left: int
    total: int
    status: str = "queued"
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "status": self.status,
            "progress": {"done": self.total - self.polls_left, "total": self.total},
            "created_at": "2025-01-01T00:00:00Z", "started_at": None, "finished_at": None,
            "error": self.error,
        }


@dataclass
class FakeState:
    datasets: dict[str, dict[str, np.ndarray | None]] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    bodies: dict[str, Any] = field(default_factory=dict)  # path -> the last JSON body received there
    faults: list[Fault] = field(default_factory=list)
    job_polls: int = 0  # > 0: computations answer 202 and finish after this many polls
    job_outcome: str = "succeeded"  # or "failed", "cancelled"
    api_keys: set[str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _job_ids: Any = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        with self.lock:
            self.datasets.clear(); self.jobs.clear(); self.log.clear(); self.faults.clear(); self.bodies.clear()
            self.job_polls, self.job_outcome, self.api_keys = 0, "succeeded", None
            self._job_ids = itertools.count(1)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method in ("*", method) and path.startswith(fault.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def requests(self, method: str | None = None, path: str | None = None) -> list[Logged]:
        return [r for r in self.log if (method is None or r.method == method)
                and (path is None or r.path.startswith(path))]


# -- the app -----------------------------------------------------------------------------------


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        if errors is not None:
            self.body["errors"] = errors
        self.headers = headers or {}


def problem_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def _answer(request: Request, answer: dict[str, Any], status: int = 200) -> Response:
    """The same fields as JSON or, when asked for, as npz (0-d members for scalars, nulls left out)."""
    if NPZ in request.headers.get("accept", ""):
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in answer.items() if v is not None})
        return Response(buffer.getvalue(), status_code=status, media_type=NPZ)
    plain = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in answer.items()}
    return JSONResponse(plain, status_code=status)


def build_app(state: FakeState):
    async def read_json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise Problem(400, "Malformed JSON", str(exc))
        if not isinstance(body, dict):
            raise Problem(400, "Malformed JSON", "the body must be a JSON object")
        return body

    def array(ref: Any, path: str) -> np.ndarray:
        if isinstance(ref, dict):
            stored = state.datasets.get(ref.get("dataset", ""))
            if stored is None:
                raise Problem(422, "Invalid request", f"unknown dataset {ref.get('dataset')}",
                              [{"path": path, "message": "unknown dataset"}])
            return stored[ref.get("field", "x")]
        try:
            a = np.asarray(ref, dtype=np.float64)
        except (TypeError, ValueError):
            raise Problem(422, "Invalid request", f"{path} is not a numeric array",
                          [{"path": path, "message": "ragged or non-numeric array"}])
        return a

    def check_architecture(body: dict[str, Any]) -> dict[str, Any]:
        arch = body.get("architecture")
        if not isinstance(arch, dict) or not arch.get("layers"):
            raise Problem(422, "Invalid architecture", "layers must be a non-empty list",
                          [{"path": "architecture.layers", "message": "must be a non-empty list"}])
        return arch

    def start(request: Request, kind: str, answer: dict[str, Any]) -> Response:
        wait = float(request.query_params.get("wait", 30))
        if not 0 <= wait <= 300:
            raise Problem(422, "Invalid request", "wait must be within 0..300",
                          [{"path": "wait", "message": "must be within 0..300"}])
        if state.job_polls == 0 and wait > 0:
            return _answer(request, answer)
        job = FakeJob(id=f"job{next(state._job_ids):04d}", kind=kind, answer=answer,
                      polls_left=max(state.job_polls, 1), total=max(state.job_polls, 1))
        state.jobs[job.id] = job
        return JSONResponse({"job": job.to_json()}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def post_dataset(request: Request) -> Response:
        raw = await request.body()
        if request.headers.get("content-type", "").startswith(NPZ):
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                x, y = npz["x"], (npz["y"] if "y" in npz.files else None)
        else:
            body = json.loads(raw)
            x = np.asarray(body["x"], dtype=np.float64)
            y = None if body.get("y") is None else np.asarray(body["y"], dtype=np.float64)
        dataset = content_hash(x, y)
        existed = dataset in state.datasets
        state.datasets[dataset] = {"x": x, "y": y}
        return JSONResponse(metadata(dataset), status_code=200 if existed else 201)

    def metadata(dataset: str) -> dict[str, Any]:
        x, y = state.datasets[dataset]["x"], state.datasets[dataset]["y"]
        return {"id": dataset, "x_shape": list(x.shape), "y_shape": None if y is None else list(y.shape),
                "dtype": x.dtype.name, "bytes": x.nbytes + (0 if y is None else y.nbytes)}

    async def dataset(request: Request) -> Response:
        dataset = request.path_params["id"]
        if dataset not in state.datasets:
            raise Problem(404, "Not Found", f"no dataset {dataset}")
        if request.method == "DELETE":
            del state.datasets[dataset]
            return Response(status_code=204)
        return JSONResponse(metadata(dataset))

    async def kernels(request: Request) -> Response:
        body = await read_json(request)
        arch = check_architecture(body)
        x1 = array(body.get("x1"), "x1")
        x2 = None if body.get("x2") is None else array(body["x2"], "x2")
        if x2 is not None and x1.shape[1:] != x2.shape[1:]:
            raise Problem(422, "Invalid request", f"x1 has features {x1.shape[1:]}, x2 {x2.shape[1:]}",
                          [{"path": "x2", "message": "feature shape differs from x1"}])
        computed = fake_kernels(arch, x1, x2, method=body.get("method", "analytic"), dtype=body.get("dtype"))
        wanted = body.get("get", ["nngp", "ntk"])
        answer = {name: k for name, k in computed.items() if name.removesuffix("_stderr") in wanted}
        answer.update(id="k-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16],
                      shape=[len(x1), len(x1 if x2 is None else x2)], cached=False)
        return start(request, "kernels", answer)

    async def predict(request: Request) -> Response:
        body = await read_json(request)
        arch = check_architecture(body)
        if body.get("t") is not None and min(np.ravel([v for v in np.ravel([body["t"]]) if v is not None] or [0])) < 0:
            raise Problem(422, "Invalid request", "t must be >= 0", [{"path": "t", "message": "must be >= 0"}])
        y_train = body.get("y_train")
        y = array(y_train, "y_train") if isinstance(y_train, dict) else np.asarray(y_train)
        try:
            answer = fake_predict(
            arch, array(body["x_train"], "x_train"), y, array(body["x_test"], "x_test"),
            t=body.get("t"), kernel=body.get("kernel", "ntk"), diag_reg=body.get("diag_reg", 0.0),
            learning_rate=body.get("learning_rate", 1.0),
            diag_reg_absolute_scale=body.get("diag_reg_absolute_scale", False),
            compute_cov=body.get("compute_cov", True), targets=body.get("targets"), dtype=body.get("dtype"),
            )
        except ValueError as exc:
            raise Problem(422, "Prediction not finite", str(exc))
        return start(request, "predict", answer)

    def find_job(request: Request) -> FakeJob:
        job = state.jobs.get(request.path_params["id"])
        if job is None:
            raise Problem(404, "Not Found", f"no job {request.path_params['id']}")
        return job

    async def job(request: Request) -> Response:
        job = find_job(request)
        if request.method == "DELETE":
            job.status = "cancelled"
            return JSONResponse({"job": job.to_json()}, status_code=202)
        if job.status in ("queued", "running"):
            job.polls_left -= 1
            job.status = "running"
            if job.polls_left <= 0:
                job.polls_left = 0
                job.status = state.job_outcome
                if job.status == "failed":
                    job.error = {"type": "about:blank", "title": "Worker failure", "status": 500,
                                 "detail": "tile 3 of 4 crashed its worker 3 times"}
        return JSONResponse(job.to_json())

    async def job_result(request: Request) -> Response:
        job = find_job(request)
        if job.status != "succeeded":
            raise Problem(409, "Conflict", f"job {job.id} is {job.status}")
        return _answer(request, job.answer)

    routes = [
        Route("/healthz", healthz),
        Route("/v1/datasets", post_dataset, methods=["POST"]),
        Route("/v1/datasets/{id}", dataset, methods=["GET", "DELETE"]),
        Route("/v1/kernels", kernels, methods=["POST"]),
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/jobs/{id}", job, methods=["GET", "DELETE"]),
        Route("/v1/jobs/{id}/result", job_result, methods=["GET"]),
    ]
    async def on_problem(request: Request, problem: Problem) -> Response:
        return problem_response(problem.body["status"], problem.body, problem.headers)

    app = Starlette(routes=routes, exception_handlers={Problem: on_problem})

    async def harness(scope, receive, send) -> None:
        """Logging, canned faults and API keys in front of the routes."""
        if scope["type"] != "http":
            return await app(scope, receive, send)
        request = Request(scope, receive)
        body = await request.body()
        state.log.append(Logged(request.method, request.url.path, dict(request.query_params),
                                {k.lower(): v for k, v in request.headers.items()}, len(body)))
        if body and request.headers.get("content-type", "").startswith("application/json"):
            try:
                state.bodies[request.url.path] = json.loads(body)
            except ValueError:
                pass

        async def replay_body():
            return {"type": "http.request", "body": body, "more_body": False}

        fault = state.take_fault(request.method, request.url.path)
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.status and fault.html is not None:
                page = Response(fault.html, status_code=fault.status, media_type="text/html", headers=fault.headers)
                return await page(scope, replay_body, send)
            if fault.status:
                problem = fault.problem or {"type": "about:blank", "title": "Canned fault",
                                            "status": fault.status, "detail": f"canned {fault.status}"}
                return await problem_response(fault.status, problem, fault.headers)(scope, replay_body, send)
        if state.api_keys is not None and request.url.path.startswith("/v1"):
            auth = request.headers.get("authorization", "")
            if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in state.api_keys:
                unauthorized = {"type": "about:blank", "title": "Unauthorized", "status": 401,
                                "detail": "missing or unknown API key"}
                return await problem_response(401, unauthorized)(scope, replay_body, send)
        await app(scope, replay_body, send)

    return harness


# -- running it --------------------------------------------------------------------------------


class FakeServer:
    """The fake app under uvicorn in a background thread, on 127.0.0.1."""

    def __init__(self, state: FakeState | None = None, port: int = 0) -> None:
        self.state = state or FakeState()
        self.app = build_app(self.state)
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))  # the same port again after a restart
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                loop="asyncio", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)
        self._socket = sock
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._socket.close()
            self._server = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
