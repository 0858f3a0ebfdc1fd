"""What the SDK hands back: jobs, kernels and predictions, with numpy arrays inside."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Progress", "Job", "Kernels", "Prediction"]

#: Job states after which nothing changes any more.
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


class Progress(NamedTuple):
    done: int
    total: int


@dataclass(frozen=True)
class Job:
    """A kernel or prediction computed in the background (``GET /v1/jobs/{id}``)."""

    id: str
    status: str  # "queued" | "running" | "succeeded" | "failed" | "cancelled"
    kind: str | None = None
    progress: Progress = Progress(0, 0)
    created_at: Any = None
    started_at: Any = None
    finished_at: Any = None
    error: dict[str, Any] | None = None  # a problem object when the job failed

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        progress = body.get("progress") or {}
        return cls(
            id=str(body["id"]),
            status=str(body.get("status", "queued")),
            kind=body.get("kind"),
            progress=Progress(int(progress.get("done") or 0), int(progress.get("total") or 0)),
            created_at=body.get("created_at"),
            started_at=body.get("started_at"),
            finished_at=body.get("finished_at"),
            error=body.get("error"),
        )


#: Fields of a kernels answer that hold Gram matrices.
KERNEL_ARRAYS = ("nngp", "ntk", "nngp_stderr", "ntk_stderr")


class Kernels(dict):
    """The asked-for Gram matrices by name (``"nngp"``, ``"ntk"``, and with Monte Carlo
    ``"nngp_stderr"``/``"ntk_stderr"``), each ``(N1, N2)``.

    A plain dict of numpy arrays, plus the answer's metadata: ``id`` (the kernel's cache key),
    ``cached`` (true when no tile had to be computed) and ``shape``.
    """

    id: str | None
    cached: bool | None
    shape: tuple[int, ...] | None

    def __init__(self, arrays: dict[str, np.ndarray], *, id=None, cached=None, shape=None) -> None:
        super().__init__(arrays)
        self.id = id
        self.cached = cached
        self.shape = shape

    @classmethod
    def from_answer(cls, answer: dict[str, Any], dtype: np.dtype) -> Kernels:
        shape = answer.get("shape")
        return cls(
            {name: _array(answer[name], dtype) for name in KERNEL_ARRAYS if name in answer},
            id=answer.get("id"),
            cached=None if answer.get("cached") is None else bool(answer["cached"]),
            shape=None if shape is None else tuple(int(n) for n in np.ravel(shape)),
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {a.shape}" for name, a in self.items())
        return f"Kernels({{{shapes}}}, cached={self.cached})"


@dataclass
class Prediction:
    """Mean and covariance, over initializations, of the infinitely wide network trained for time t.

    ``mean`` is ``(M, k)``; ``covariance`` ``(M, M)`` over the test points (shared by the k
    outputs) and ``variance`` its diagonal ``(M,)``. When ``t`` is a list, every array gains a
    leading time axis of that length. ``t`` is None for t = infinity. ``covariance`` and
    ``variance`` are None when the prediction was made with ``compute_cov=False``.
    """

    mean: np.ndarray
    covariance: np.ndarray | None = None
    variance: np.ndarray | None = None
    t: float | np.ndarray | None = None
    labels: np.ndarray | None = None  # the classes, in column order, for targets="one_hot"
    max_learning_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # fields this SDK doesn't know

    @property
    def std(self) -> np.ndarray | None:
        """Standard deviation of each test output: the square root of ``variance``."""
        if self.variance is None:
            return None
        # Round-off leaves some posterior variances a hair below zero; they are zero.
        return np.sqrt(np.maximum(self.variance, 0.0))

    @classmethod
    def from_answer(cls, answer: dict[str, Any], dtype: np.dtype, t_sent: Any) -> Prediction:
        covariance = _array(answer["covariance"], dtype) if answer.get("covariance") is not None else None
        variance = _array(answer["variance"], dtype) if answer.get("variance") is not None else None
        if variance is None and covariance is not None:
            variance = np.diagonal(covariance, axis1=-2, axis2=-1).copy()
        t = answer["t"] if "t" in answer else t_sent  # an npz answer has nowhere to put t = null
        known = {"mean", "covariance", "variance", "t", "labels", "max_learning_rate"}
        return cls(
            mean=_array(answer["mean"], dtype),
            covariance=covariance,
            variance=variance,
            t=_times(t),
            labels=np.asarray(answer["labels"]) if answer.get("labels") is not None else None,
            max_learning_rate=(
                float(answer["max_learning_rate"]) if answer.get("max_learning_rate") is not None else None
            ),
            extra={k: v for k, v in answer.items() if k not in known},
        )


def _times(t: Any) -> float | np.ndarray | None:
    # A list of times comes back as an array; null (t = infinity) stays None alone and is inf in a list.
    if isinstance(t, (list, tuple, np.ndarray)):
        return np.array([np.inf if v is None else v for v in np.ravel(np.asarray(t, dtype=object))], dtype=np.float64)
    return None if t is None else float(t)


def _array(value: Any, dtype: np.dtype) -> np.ndarray:
    # JSON numbers decode as Python floats; give them the dtype that was computed. npz members
    # already carry it and pass through untouched.
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value, dtype=dtype)
