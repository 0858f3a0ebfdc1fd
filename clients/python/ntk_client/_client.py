"""`Client` and `AsyncClient`: one implementation, two transports.

Every operation (upload, kernels, predict, following a job...) is written once, in
:class:`_BaseClient`, as a generator that *yields* what it needs done, an ``httpx.Request`` to
send or a :class:`_Sleep`, and is *sent back* the ``httpx.Response`` (or has the transport error
thrown in at the ``yield``). The two clients differ only in the few lines that carry those
instructions out: ``Client._run`` with ``httpx.Client`` and ``time.sleep``, ``AsyncClient._run``
with ``httpx.AsyncClient`` and an awaited sleep. Retries, uploads, job polling and decoding
therefore cannot drift apart between the twins, and both give identical answers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, Union

import httpx
import numpy as np

from ._arrays import as_features, as_targets, dataset_id, decode_npz, encode_npz, to_nested_list
from ._exceptions import (
    JobCancelled, JobFailed, NetworkError, NotFound, ValidationError, error_from_response,
    parse_retry_after, problem_fields,
)
from ._models import Job, Kernels, Prediction
from ._progress import JobProgress, ProgressSetting
from .stax import _jsonable

__all__ = ["Client", "AsyncClient"]

__version__ = "0.1.0"

log = logging.getLogger("ntk_client")

JSON = "application/json"
NPZ = "application/x-npz"
DEFAULT_URL = "http://localhost:8000"

#: Answers that say "try again": the service is restarting, overloaded, or behind a proxy that is.
RETRY_STATUSES = frozenset({429, 502, 503, 504})

#: Transport errors that a retry cannot cure: a URL without http(s), a request httpx itself refuses.
NOT_RETRYABLE = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)

#: A request that waits up to ``wait`` seconds server-side gets that much more read timeout.
WAIT_MARGIN_S = 30.0

T = TypeVar("T")
ArrayLike = Any  # numpy arrays, nested lists, or a dataset id (str) returned by upload()


class _Sleep(NamedTuple):
    seconds: float


#: A shared operation: yields requests to send and sleeps to take, returns its result.
Operation = Generator[Union[httpx.Request, _Sleep], Union[httpx.Response, None], T]


def _architecture(arch: Any) -> dict[str, Any]:
    """The spec dict from a stax ``serial(...)`` (or ``stack(...)``), a plain dict, or JSON text."""
    if hasattr(arch, "to_dict"):
        return arch.to_dict()
    if isinstance(arch, Mapping):
        return dict(arch)
    if isinstance(arch, (str, bytes)):
        return json.loads(arch)
    raise TypeError(f"an architecture is a stax.serial(...), a dict or JSON text, not {type(arch).__name__}")


def _sweep_architectures(architectures: Any) -> list[dict[str, Any]] | dict[str, dict[str, Any]]:
    """A list of architectures, or a mapping label -> architecture (the labels name the rows)."""
    if isinstance(architectures, Mapping):
        return {str(label): _architecture(arch) for label, arch in architectures.items()}
    return [_architecture(arch) for arch in architectures]


def _is_reference(x: Any) -> bool:
    return isinstance(x, str) or (isinstance(x, Mapping) and "dataset" in x)


def _reference(x: Any, field: str | None = None) -> dict[str, str]:
    ref = {"dataset": x} if isinstance(x, str) else dict(x)
    if field is not None:
        ref["field"] = field
    return ref


def _wire_time(t: Any) -> Any:
    """``t`` as JSON: None or infinity is null (t = infinity), a sequence becomes a list."""
    if t is None:
        return None
    if isinstance(t, (Sequence, np.ndarray)) and not isinstance(t, str):
        return [_wire_time(v) for v in np.ravel(np.asarray(t, dtype=object))]
    t = float(t)
    return None if math.isinf(t) and t > 0 else t


def _decode(response: httpx.Response) -> dict[str, Any]:
    # Decide by what the server sent, not by what was asked: a server may answer JSON anyway.
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == NPZ:
        return decode_npz(response.content)
    return response.json()


class _BaseClient:
    """Configuration and every operation, independent of the transport (see the module docstring)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        binary_threshold: int = 1_000_000,
        poll_interval: float = 0.25,
        max_poll_interval: float = 2.0,
        progress: ProgressSetting = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = (url or os.environ.get("NTK_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get("NTK_API_KEY")
        self.timeout = httpx.Timeout(timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.binary_threshold = binary_threshold
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.progress = progress
        self._headers = {"User-Agent": f"ntk-client/{__version__} httpx/{httpx.__version__}", "Accept": JSON}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})
        self._http: httpx.Client | httpx.AsyncClient  # set by the subclass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- HTTP with retries ---------------------------------------------------------------------

    def _backoff_delay(self, attempt: int) -> float:
        # Exponential, with "equal jitter" so that clients knocked over together come back apart.
        delay = min(self.max_backoff, self.backoff * 2**attempt)
        return delay * random.uniform(0.5, 1.0)

    def _send(self, request: httpx.Request) -> Operation[httpx.Response]:
        """Send with bounded retries on connection errors and on 429/502/503/504.

        Retrying any request is safe: every write is content-addressed (the same upload gives the
        same dataset, the same kernel request joins the same job), so a repeat changes nothing.
        """
        for attempt in range(self.max_retries + 1):
            retries_left = attempt < self.max_retries
            try:
                response = yield request
            except httpx.TransportError as exc:
                if not retries_left or isinstance(exc, NOT_RETRYABLE):
                    attempts = f"{attempt + 1} attempt{'s' if attempt else ''}"
                    raise NetworkError(
                        f"{request.method} {request.url} failed after {attempts}: "
                        f"{type(exc).__name__}: {exc or 'no detail'}", title="Network error",
                    ) from exc
                reason, delay = type(exc).__name__, self._backoff_delay(attempt)
            else:
                if response.status_code not in RETRY_STATUSES or not retries_left:
                    return response
                retry_after = parse_retry_after(response)
                reason = f"HTTP {response.status_code}"
                delay = retry_after if retry_after is not None else self._backoff_delay(attempt)
            log.info("%s %s: %s, retrying in %.2fs (%d/%d)", request.method, request.url.path,
                     reason, delay, attempt + 1, self.max_retries)
            yield _Sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Operation[httpx.Response]:
        """One call to the service; an error answer raises its typed exception."""
        headers = dict(headers or {})
        if body is not None:
            try:
                content = json.dumps(body, allow_nan=False).encode()
            except ValueError as exc:  # NaN or infinity among the parameters
                raise ValidationError(f"the request cannot be sent as JSON: {exc}", title="Invalid input") from exc
            headers["Content-Type"] = JSON
        request = self._http.build_request(
            method, path, content=content, headers=headers, params=params,
            timeout=timeout if timeout is not None else self.timeout,
        )
        response = yield from self._send(request)
        if response.is_error:
            raise error_from_response(response)
        return response

    def _timeout_for_wait(self, wait: float | None) -> httpx.Timeout:
        # The server holds the request open up to `wait` seconds before answering 202: the read
        # timeout must outlast that, or every long computation would look like a dead server.
        read = self.timeout.read
        if read is not None and wait is not None:
            read = max(read, wait + WAIT_MARGIN_S)
        return httpx.Timeout(connect=self.timeout.connect, read=read, write=self.timeout.write, pool=self.timeout.pool)

    # -- datasets --------------------------------------------------------------------------------

    def _upload(self, x: ArrayLike, y: ArrayLike = None) -> Operation[str]:
        x = as_features(x)
        y = None if y is None else as_targets(y)
        known_id = dataset_id(x, y)
        try:
            yield from self._request("GET", f"/v1/datasets/{known_id}")
            return known_id  # the server holds these exact bytes already
        except NotFound:
            pass
        response = yield from self._request(
            "POST", "/v1/datasets", content=encode_npz(x=x, y=y), headers={"Content-Type": NPZ},
        )
        # The server's id is the one that counts, should the two hashes ever disagree.
        return str(response.json()["id"])

    def _dataset(self, dataset: str) -> Operation[dict[str, Any]]:
        return (yield from self._request("GET", f"/v1/datasets/{dataset}")).json()

    def _delete_dataset(self, dataset: str) -> Operation[None]:
        yield from self._request("DELETE", f"/v1/datasets/{dataset}")

    def _array_ref(self, x: ArrayLike, path: str) -> Operation[Any]:
        """An array reference of the REST API (docs/rest.md): inline nested lists when small, an uploaded dataset when large."""
        if _is_reference(x):
            return _reference(x)
        x = as_features(x)
        if x.nbytes > self.binary_threshold:
            return {"dataset": (yield from self._upload(x))}
        return to_nested_list(x, path)

    def _training_refs(self, x_train: ArrayLike, y_train: ArrayLike,
                       names: tuple[str, str] = ("x_train", "y_train")) -> Operation[tuple[Any, Any]]:
        """ArrayRefs for a training (or validation: ``names``) set; a large one travels as one
        dataset holding x and y."""
        x_name, y_name = names
        if _is_reference(x_train):
            if y_train is None:
                return _reference(x_train), _reference(x_train, field="y")
            y_ref = _reference(y_train) if _is_reference(y_train) else to_nested_list(as_targets(y_train), y_name)
            return _reference(x_train), y_ref
        if y_train is None:
            raise TypeError(f"{y_name} is required unless {x_name} is a dataset id holding y")
        x, y = as_features(x_train), as_targets(y_train)
        if x.nbytes + y.nbytes > self.binary_threshold:
            dataset = yield from self._upload(x, y)
            return {"dataset": dataset}, {"dataset": dataset, "field": "y"}
        return to_nested_list(x, x_name), to_nested_list(y, y_name)

    # -- jobs ----------------------------------------------------------------------------------

    def _job(self, job_id: str) -> Operation[Job]:
        return Job.from_json((yield from self._request("GET", f"/v1/jobs/{job_id}")).json())

    def _cancel(self, job_id: str) -> Operation[None]:
        yield from self._request("DELETE", f"/v1/jobs/{job_id}")

    def _follow(self, job: Job, progress: ProgressSetting) -> Operation[Job]:
        """Poll a job until it ends; raise if it did not succeed."""
        display = JobProgress(self.progress if progress is None else progress, job)
        interval = self.poll_interval
        try:
            while not job.finished:
                yield _Sleep(interval)
                interval = min(interval * 1.5, self.max_poll_interval)
                job = yield from self._job(job.id)
                display.update(job)
        finally:
            display.close()
        if job.status == "failed":
            problem = job.error or {"title": "Job failed", "detail": f"job {job.id} failed without saying why"}
            raise JobFailed(**problem_fields(problem), job=job)
        if job.status == "cancelled":
            raise JobCancelled(f"job {job.id} was cancelled", title="Job cancelled", job=job)
        return job

    def _job_answer(self, job: Job, progress: ProgressSetting, accept: str) -> Operation[dict[str, Any]]:
        job = yield from self._follow(job, progress)
        response = yield from self._request("GET", f"/v1/jobs/{job.id}/result", headers={"Accept": accept})
        return _decode(response)

    def _compute(
        self, path: str, body: dict[str, Any], *, wait: float | None, progress: ProgressSetting, binary: bool,
    ) -> Operation[dict[str, Any]]:
        """POST a computation; when it outlasts `wait` (202 + Job), follow the job to its answer."""
        accept = NPZ if binary else JSON
        response = yield from self._request(
            "POST", path, body=body, headers={"Accept": accept},
            params=None if wait is None else {"wait": wait}, timeout=self._timeout_for_wait(wait),
        )
        if response.status_code == 202:
            return (yield from self._job_answer(Job.from_json(response.json()["job"]), progress, accept))
        return _decode(response)

    def _result(self, job_id: str, progress: ProgressSetting) -> Operation[Kernels | Prediction | list[dict]]:
        job = yield from self._job(job_id)
        # Asked for as npz, the arrays keep the dtype they were computed in.
        answer = yield from self._job_answer(job, progress, NPZ)
        if "rows" in answer:  # a sweep's table (always JSON)
            return answer["rows"]
        if "mean" in answer:
            return Prediction.from_answer(answer, np.dtype(np.float64), t_sent=None)
        return Kernels.from_answer(answer, np.dtype(np.float64))

    # -- computations ----------------------------------------------------------------------------

    def _result_is_large(self, refs: Sequence[Any], n_values: int) -> bool:
        # Large answers come back as npz. Inputs sent by reference are large by choice (or of
        # unknown size), so their answers are asked for in binary too.
        return any(isinstance(r, Mapping) for r in refs) or 8 * n_values > self.binary_threshold

    def _kernels(
        self, arch, x1, x2, *, get, dtype, method, samples, seed, wait, progress,
    ) -> Operation[Kernels]:
        get = [get] if isinstance(get, str) else list(get)
        body: dict[str, Any] = {"architecture": _architecture(arch)}
        body["x1"] = yield from self._array_ref(x1, "x1")
        if x2 is not None:
            body["x2"] = yield from self._array_ref(x2, "x2")
        body["get"] = get
        body["method"] = method
        if dtype is not None:
            body["dtype"] = np.dtype(dtype).name
        if samples is not None:
            body["samples"] = samples
        if seed is not None:
            body["seed"] = seed
        n1 = len(body["x1"]) if isinstance(body["x1"], list) else 0
        n2 = len(body["x2"]) if isinstance(body.get("x2"), list) else n1
        per_kernel = 2 if method == "monte_carlo" else 1  # Monte Carlo adds a standard error each
        binary = self._result_is_large([body["x1"], body.get("x2")], n1 * n2 * len(get) * per_kernel)
        answer = yield from self._compute("/v1/kernels", body, wait=wait, progress=progress, binary=binary)
        return Kernels.from_answer(answer, np.dtype(dtype or np.float64))

    def _predict(
        self, arch, x_train, y_train, x_test, *, t, kernel, diag_reg, learning_rate,
        diag_reg_absolute_scale, compute_cov, targets, dtype, wait, progress,
    ) -> Operation[Prediction]:
        body: dict[str, Any] = {"architecture": _architecture(arch)}
        body["x_train"], body["y_train"] = yield from self._training_refs(x_train, y_train)
        body["x_test"] = yield from self._array_ref(x_test, "x_test")
        body.update(
            kernel=kernel, t=_wire_time(t), learning_rate=learning_rate, diag_reg=diag_reg,
            diag_reg_absolute_scale=diag_reg_absolute_scale, compute_cov=compute_cov,
        )
        if targets is not None:
            body["targets"] = targets
        if dtype is not None:
            body["dtype"] = np.dtype(dtype).name
        m = len(body["x_test"]) if isinstance(body["x_test"], list) else 0
        n_times = len(body["t"]) if isinstance(body["t"], list) else 1
        binary = self._result_is_large([body["x_train"], body["x_test"]], n_times * m * (m + 2))
        answer = yield from self._compute("/v1/predict", body, wait=wait, progress=progress, binary=binary)
        return Prediction.from_answer(answer, np.dtype(dtype or np.float64), t_sent=body["t"])

    def _sweep(
        self, x_train, y_train, *, base, grid, architectures, x_val, y_val, diag_reg, dtype, wait, progress,
    ) -> Operation[list[dict[str, Any]]]:
        if (architectures is None) == (base is None):
            raise TypeError("give a base (with a grid) or a list of architectures, not both")
        body: dict[str, Any] = {}
        body["x_train"], body["y_train"] = yield from self._training_refs(x_train, y_train)
        if x_val is not None:
            body["x_val"], body["y_val"] = yield from self._training_refs(x_val, y_val, ("x_val", "y_val"))
        if base is not None:
            body["base"] = _architecture(base)  # a stax.stack(...) too
            body["grid"] = {str(key): [_jsonable(v) for v in values] for key, values in (grid or {}).items()}
        else:
            body["architectures"] = _sweep_architectures(architectures)
        body["diag_reg"] = diag_reg if diag_reg == "fit" else float(diag_reg)
        if dtype is not None:
            body["dtype"] = np.dtype(dtype).name
        answer = yield from self._compute("/v1/sweeps", body, wait=wait, progress=progress, binary=False)
        return answer["rows"]

    def _health(self) -> Operation[dict[str, Any]]:
        return (yield from self._request("GET", "/healthz")).json()


def _same_doc(sync_method):
    """Give an AsyncClient coroutine its Client twin's docstring: one text, one truth."""
    def decorate(async_method):
        async_method.__doc__ = sync_method.__doc__
        return async_method
    return decorate


class Client(_BaseClient):
    """A blocking client for the NTK service.

    >>> with Client("http://localhost:8000") as c:
    ...     k = c.kernels(arch, x1)            # {"nngp": array, "ntk": array}

    ``url`` defaults to ``$NTK_URL`` or http://localhost:8000, ``api_key`` to ``$NTK_API_KEY``
    (sent as ``Authorization: Bearer <key>``). Options: ``timeout`` (seconds or ``httpx.Timeout``,
    per request), ``max_retries`` (5) with exponential backoff starting at ``backoff`` seconds
    and capped at ``max_backoff``, ``binary_threshold`` (bytes above which arrays travel as npz),
    ``poll_interval``/``max_poll_interval`` while following a job, ``progress`` (the default for
    every call: None shows a bar when stderr is a terminal), extra ``headers``, and ``transport``
    (an ``httpx.BaseTransport``, e.g. for tests).
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 transport: httpx.BaseTransport | None = None, **options: Any) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=self.timeout, transport=transport)

    def _run(self, operation: Operation[T]) -> T:
        """Carry out a shared operation with blocking I/O."""
        try:
            step = next(operation)
            while True:
                if isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                    step = operation.send(None)
                    continue
                try:
                    response = self._http.send(step)
                except httpx.TransportError as exc:
                    step = operation.throw(exc)
                else:
                    step = operation.send(response)
        except StopIteration as finished:
            return finished.value
        finally:
            operation.close()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def kernels(
        self, arch: Any, x1: ArrayLike, x2: ArrayLike = None, *,
        get: str | Sequence[str] = ("nngp", "ntk"), dtype: Any = None, method: str = "analytic",
        samples: int | None = None, seed: int | None = None, wait: float | None = 30,
        progress: ProgressSetting = None,
    ) -> Kernels:
        """NNGP and/or NTK Gram matrices between the rows of ``x1`` and ``x2`` (``x1`` when None).

        ``arch`` is a ``stax.serial(...)``, a spec dict or its JSON. ``x1``/``x2`` are arrays
        ``(N, features...)``, or dataset ids from :meth:`upload`. ``get`` names the kernels wanted;
        ``dtype`` "float64" (the server's default) or "float32". ``method="monte_carlo"`` estimates
        them from ``samples`` finite networks of the spec's widths (seeded by ``seed``) and adds
        ``nngp_stderr``/``ntk_stderr``. ``wait`` is how long the server may hold the request
        before handing back a job, which is then followed to the end (see ``progress``).

        Returns a :class:`Kernels`: a dict of ``(N1, N2)`` numpy arrays by kernel name.
        """
        return self._run(self._kernels(
            arch, x1, x2, get=get, dtype=dtype, method=method, samples=samples, seed=seed,
            wait=wait, progress=progress,
        ))

    def predict(
        self, arch: Any, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike, *,
        t: float | Sequence[float] | None = None, kernel: str = "ntk", diag_reg: float = 0.0,
        learning_rate: float = 1.0, diag_reg_absolute_scale: bool = False, compute_cov: bool = True,
        targets: str | None = None, dtype: Any = None, wait: float | None = 30,
        progress: ProgressSetting = None,
    ) -> Prediction:
        """Outputs on ``x_test`` of the infinitely wide network trained on (``x_train``, ``y_train``)
        by gradient descent on MSE for time ``t`` (None: to convergence; a list: all those times).

        Semantics of ``neural_tangents.predict.gradient_descent_mse_ensemble``: ``kernel`` is
        "ntk", "nngp" or "ntkgp"; ``diag_reg`` is added to the training kernel's diagonal (scaled
        by its mean diagonal unless ``diag_reg_absolute_scale``). ``targets="one_hot"`` takes class
        labels in ``y_train``. ``x_train`` may be a dataset id whose ``y`` is the targets (then
        ``y_train`` may be None). With ``compute_cov=False`` no covariance is computed.

        Returns a :class:`Prediction` (``mean``, ``covariance``, ``variance``, ``std``, ...).
        """
        return self._run(self._predict(
            arch, x_train, y_train, x_test, t=t, kernel=kernel, diag_reg=diag_reg,
            learning_rate=learning_rate, diag_reg_absolute_scale=diag_reg_absolute_scale,
            compute_cov=compute_cov, targets=targets, dtype=dtype, wait=wait, progress=progress,
        ))

    def sweep(
        self, x_train: ArrayLike, y_train: ArrayLike, *, base: Any = None, grid: Mapping[str, Sequence] | None = None,
        architectures: Any = None, x_val: ArrayLike = None, y_val: ArrayLike = None,
        diag_reg: float | str = "fit", dtype: Any = None, wait: float | None = 30, progress: ProgressSetting = None,
    ) -> list[dict[str, Any]]:
        """Many architectures on one dataset, computed as one job: one row (a dict) per architecture.

        Either ``base`` and ``grid``: ``base`` is an architecture or a ``stax.stack(block, readout,
        stem=..., depth=...)``, ``grid`` a mapping ``{key: [values]}`` over ``depth`` (stacks),
        ``parameterization``, ``activation`` or any layer parameter (``w_std``, ``block.b_std``, ...),
        the last key varying fastest; or ``architectures``, a list (or a mapping label -> architecture).

        Each row holds its grid values (or ``architecture``: its index or label), the NNGP
        ``log_marginal_likelihood`` of ``y_train`` with the output scale fitted (``output_scale``)
        and ``diag_reg``, ε relative to the kernel's mean diagonal, as given or fitted (``"fit"``);
        with ``x_val``/``y_val``, ``nngp_mse`` and ``ntk_mse`` of the t = ∞ predictors (and
        ``nngp_accuracy``/``ntk_accuracy`` for targets of two or more columns); and ``error``:
        None, or why the architecture has no numbers. ``pandas.DataFrame(rows)`` makes it a table;
        :func:`ntk_client.plot_sweep` a figure.
        """
        return self._run(self._sweep(
            x_train, y_train, base=base, grid=grid, architectures=architectures, x_val=x_val, y_val=y_val,
            diag_reg=diag_reg, dtype=dtype, wait=wait, progress=progress,
        ))

    def upload(self, x: ArrayLike, y: ArrayLike = None) -> str:
        """Store a dataset on the server (npz) and return its id, for use in place of an array.

        The id is the content hash, computed here first: data the server already holds is not sent again.
        """
        return self._run(self._upload(x, y))

    def dataset(self, dataset: str) -> dict[str, Any]:
        """A dataset's metadata: ``id``, ``x_shape``, ``y_shape``, ``dtype``, ``bytes``. NotFound if unknown."""
        return self._run(self._dataset(dataset))

    def delete_dataset(self, dataset: str) -> None:
        """Delete a dataset (its cached kernels age out on their own)."""
        return self._run(self._delete_dataset(dataset))

    def job(self, job_id: str) -> Job:
        """A job's current state."""
        return self._run(self._job(job_id))

    def cancel(self, job_id: str) -> None:
        """Ask the service to cancel a job; its workers stop within one tile."""
        return self._run(self._cancel(job_id))

    def result(self, job_id: str, *, progress: ProgressSetting = None) -> Kernels | Prediction | list[dict]:
        """Wait for a job and return its answer (:class:`Kernels`, :class:`Prediction`, or a sweep's rows).

        Raises :class:`JobFailed` or :class:`JobCancelled` when it ended otherwise.
        """
        return self._run(self._result(job_id, progress))

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` when the server process is up."""
        return self._run(self._health())


class AsyncClient(_BaseClient):
    """The :class:`Client`'s twin for asyncio (or trio): the same methods, as coroutines.

    >>> async with AsyncClient() as c:
    ...     a, b = await asyncio.gather(c.kernels(arch, x1), c.kernels(arch, x2))
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self.timeout, transport=transport)

    async def _run(self, operation: Operation[T]) -> T:
        """Carry out a shared operation with non-blocking I/O."""
        try:
            step = next(operation)
            while True:
                if isinstance(step, _Sleep):
                    await _async_sleep(step.seconds)
                    step = operation.send(None)
                    continue
                try:
                    response = await self._http.send(step)
                except httpx.TransportError as exc:
                    step = operation.throw(exc)
                else:
                    step = operation.send(response)
        except StopIteration as finished:
            return finished.value
        finally:
            operation.close()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    @_same_doc(Client.kernels)
    async def kernels(
        self, arch: Any, x1: ArrayLike, x2: ArrayLike = None, *,
        get: str | Sequence[str] = ("nngp", "ntk"), dtype: Any = None, method: str = "analytic",
        samples: int | None = None, seed: int | None = None, wait: float | None = 30,
        progress: ProgressSetting = None,
    ) -> Kernels:
        return await self._run(self._kernels(
            arch, x1, x2, get=get, dtype=dtype, method=method, samples=samples, seed=seed,
            wait=wait, progress=progress,
        ))

    @_same_doc(Client.predict)
    async def predict(
        self, arch: Any, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike, *,
        t: float | Sequence[float] | None = None, kernel: str = "ntk", diag_reg: float = 0.0,
        learning_rate: float = 1.0, diag_reg_absolute_scale: bool = False, compute_cov: bool = True,
        targets: str | None = None, dtype: Any = None, wait: float | None = 30,
        progress: ProgressSetting = None,
    ) -> Prediction:
        return await self._run(self._predict(
            arch, x_train, y_train, x_test, t=t, kernel=kernel, diag_reg=diag_reg,
            learning_rate=learning_rate, diag_reg_absolute_scale=diag_reg_absolute_scale,
            compute_cov=compute_cov, targets=targets, dtype=dtype, wait=wait, progress=progress,
        ))

    @_same_doc(Client.sweep)
    async def sweep(
        self, x_train: ArrayLike, y_train: ArrayLike, *, base: Any = None, grid: Mapping[str, Sequence] | None = None,
        architectures: Any = None, x_val: ArrayLike = None, y_val: ArrayLike = None,
        diag_reg: float | str = "fit", dtype: Any = None, wait: float | None = 30, progress: ProgressSetting = None,
    ) -> list[dict[str, Any]]:
        return await self._run(self._sweep(
            x_train, y_train, base=base, grid=grid, architectures=architectures, x_val=x_val, y_val=y_val,
            diag_reg=diag_reg, dtype=dtype, wait=wait, progress=progress,
        ))

    @_same_doc(Client.upload)
    async def upload(self, x: ArrayLike, y: ArrayLike = None) -> str:
        return await self._run(self._upload(x, y))

    @_same_doc(Client.dataset)
    async def dataset(self, dataset: str) -> dict[str, Any]:
        return await self._run(self._dataset(dataset))

    @_same_doc(Client.delete_dataset)
    async def delete_dataset(self, dataset: str) -> None:
        return await self._run(self._delete_dataset(dataset))

    @_same_doc(Client.job)
    async def job(self, job_id: str) -> Job:
        return await self._run(self._job(job_id))

    @_same_doc(Client.cancel)
    async def cancel(self, job_id: str) -> None:
        return await self._run(self._cancel(job_id))

    @_same_doc(Client.result)
    async def result(self, job_id: str, *, progress: ProgressSetting = None) -> Kernels | Prediction | list[dict]:
        return await self._run(self._result(job_id, progress))

    @_same_doc(Client.health)
    async def health(self) -> dict[str, Any]:
        return await self._run(self._health())


async def _async_sleep(seconds: float) -> None:
    # anyio (an httpx dependency) sleeps under whichever event loop is running: asyncio or trio.
    try:
        import anyio
    except ImportError:  # pragma: no cover - httpx always brings anyio today
        import asyncio

        await asyncio.sleep(seconds)
    else:
        await anyio.sleep(seconds)
