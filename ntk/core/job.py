"""The job a request becomes, as it crosses Redis from the API to the workers: typed models, a
discriminated union of kernel, prediction and sweep jobs (``kind``), and its identity.

Arrays in a job are references (``ArrayRef``): ``digest`` hashes the array's dtype, shape and
bytes, ``dataset`` names the stored dataset holding it (None: the array came inline and lives in
the job's inputs under its digest).

Every job names its ``tenant`` (who owns it, and in whose datasets its references resolve) and its
``cache_scope`` (whose cached tiles it reads and writes: the tenant, or "shared" with
NTK_SHARED_CACHE): ntk.api.tenants.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

DType = Literal["float32", "float64"]
Time = Annotated[float, Field(ge=0, allow_inf_nan=False)]

# Training time as every interface writes it (REST, SDK, CLI, a job): a number, or a list of
# them; null (None) is t = ∞, alone or in a list. How many a prediction may ask for is a setting
# (NTK_MAX_TIMES, ntk.api.limits), not part of the type.
Times = Annotated[
    Union[Annotated[Time, Tag("time")], Annotated[list[Time | None], Field(min_length=1), Tag("times")]],
    Discriminator(lambda value: "times" if isinstance(value, list) else "time"),
]


def times_as_floats(t: float | list[float | None] | None) -> float | list[float]:
    """``t`` (null = ∞) with ∞ written ``inf``, as an npz's float array holds it."""
    if isinstance(t, list):
        return [math.inf if v is None else v for v in t]
    return math.inf if t is None else t


def engine_times(t: float | list[float | None] | None) -> float | list[float] | None:
    """``t`` (null = ∞) as the engine takes it (ntk.engine.predict): a lone None stays None, the
    limit solved by Cholesky (NT ``gp_inference``); inside a list ∞ is ``inf``, solved with the
    other times by one eigendecomposition (NT ``gradient_descent_mse_ensemble``)."""
    return None if t is None else times_as_floats(t)


class ArrayRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    digest: str
    shape: list[int]
    dataset: str | None = None
    field: Literal["x", "y"] = "x"


class Owned(BaseModel):
    """What every kind of job holds besides its computation: who it belongs to."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    cache_scope: str


class KernelJob(Owned):
    """K(x1, x2) and/or Θ(x1, x2) (x2 None: x1 against itself)."""

    kind: Literal["kernels"] = "kernels"
    architecture: dict  # canonical (ntk.spec), checked against the points by the API
    dtype: DType
    x1: ArrayRef
    x2: ArrayRef | None = None
    get: list[Literal["nngp", "ntk"]]
    method: Literal["analytic", "monte_carlo"] = "analytic"
    samples: int | None = None  # Monte Carlo only
    seed: int | None = None  # Monte Carlo only


class PredictJob(Owned):
    """The infinite ensemble's mean (and covariance) on x_test after training on (x_train, y_train)."""

    kind: Literal["predict"] = "predict"
    architecture: dict
    dtype: DType
    x_train: ArrayRef
    y_train: ArrayRef
    x_test: ArrayRef
    kernel: Literal["ntk", "nngp", "ntkgp"] = "ntk"
    targets: Literal["one_hot"] | None = None  # y_train holds class labels (ntk.engine.predict.targets)
    t: Times | None = None
    learning_rate: float = 1.0
    diag_reg: float = 0.0
    diag_reg_absolute_scale: bool = False
    compute_cov: bool = True


class SweepJob(Owned):
    """One row of numbers per architecture of a sweep (ntk.spec.sweep_grid, ntk.engine.sweep),
    computed by one task. The grid is a list of (key, values) pairs, and the architectures' labels a
    list beside them, because their order is the rows' order and a request's key (``request_key``)
    hashes mappings with their keys sorted."""

    kind: Literal["sweep"] = "sweep"
    base: dict | None = None
    grid: list[tuple[str, list]] | None = None
    architectures: list[dict] | None = None
    labels: list[str] | None = None  # the architectures were given as a mapping label -> spec
    dtype: DType
    x_train: ArrayRef
    y_train: ArrayRef
    x_val: ArrayRef | None = None
    y_val: ArrayRef | None = None
    diag_reg: Annotated[float, Field(ge=0, allow_inf_nan=False)] | Literal["fit"] = "fit"

    def expand_arguments(self) -> dict:
        """``sweep_grid.expand``'s base, grid and architectures, as the request gave them."""
        architectures = self.architectures
        if architectures is not None and self.labels is not None:
            architectures = dict(zip(self.labels, architectures))
        return {"base": self.base, "grid": None if self.grid is None else dict(self.grid),
                "architectures": architectures}


AnyJob = KernelJob | PredictJob | SweepJob
Job = Annotated[Union[KernelJob, PredictJob, SweepJob], Field(discriminator="kind")]
JOBS: TypeAdapter[AnyJob] = TypeAdapter(Job)


def digest_of(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def request_key(job: AnyJob) -> str:
    """Identical requests (same numbers asked of the same data by the same tenant) have the same
    key, however their arrays travelled (inline or as a dataset); the tenant is part of the job."""
    def strip(value):
        if isinstance(value, dict) and "digest" in value:
            return value["digest"]
        return value
    return digest_of({name: strip(value) for name, value in job.model_dump(mode="json").items()})
