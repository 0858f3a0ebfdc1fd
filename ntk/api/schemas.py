"""The REST schema (docs/rest.md) as pydantic models: they validate requests and document /docs."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from ntk.core.job import Times
from ntk.spec.architecture import Architecture
from ntk.spec.limits import DEFAULT_SAMPLES, MAX_SAMPLES

Kernel = Literal["nngp", "ntk"]
DType = Literal["float32", "float64"]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    """Unknown fields are errors, and so are values of the wrong JSON type: ``true`` or ``"2"`` is no number."""

    model_config = ConfigDict(extra="forbid", strict=True)


class DatasetRef(Strict):
    dataset: str = Field(description="id of an uploaded dataset (its 64-hex content hash)")
    field: Literal["x", "y"] = "x"


def _array_kind(value: Any) -> str:
    return "dataset-ref" if isinstance(value, (dict, DatasetRef)) else "inline"


ArrayRef = Annotated[
    Union[Annotated[DatasetRef, Tag("dataset-ref")], Annotated[list[Any], Tag("inline")]],
    Discriminator(_array_kind),
]


MLP_EXAMPLE = {"layers": [{"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                          {"type": "Dense", "out_dim": 1}]}


class KernelRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"architecture": MLP_EXAMPLE, "x1": [[0.1, 0.2], [0.3, -0.4], [1.0, 0.5]], "get": ["ntk"]}]})

    architecture: Architecture
    x1: ArrayRef
    x2: ArrayRef | None = Field(None, description="default: x1 (a symmetric Gram matrix)")
    get: list[Kernel] = Field(["nngp", "ntk"], min_length=1, max_length=2)
    dtype: DType | None = Field(None, description="default: NTK_DTYPE")
    method: Literal["analytic", "monte_carlo"] = "analytic"
    samples: int | None = Field(None, ge=2, le=MAX_SAMPLES,
                                description=f"Monte Carlo: random networks (default {DEFAULT_SAMPLES})")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Monte Carlo: seed (default 0)")


class PredictRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"architecture": MLP_EXAMPLE, "x_train": [[0.0], [1.0], [2.0]], "y_train": [[0.0], [0.8], [0.9]],
         "x_test": [[1.5]], "t": [1, 10, None], "diag_reg": 1e-4}]})

    architecture: Architecture
    x_train: ArrayRef
    y_train: ArrayRef
    x_test: ArrayRef
    kernel: Literal["ntk", "nngp", "ntkgp"] = "ntk"
    targets: Literal["one_hot"] | None = Field(None, description="y_train holds class labels")
    t: Times | None = Field(None, description="training time; null is t = ∞ (also inside a list)")
    learning_rate: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    diag_reg: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    diag_reg_absolute_scale: bool = False
    compute_cov: bool = True
    dtype: DType | None = None


class SweepRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"x_train": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], "y_train": [[0.0], [0.8], [0.9]],
         "base": {"block": [{"type": "Dense", "out_dim": 512}, {"type": "Relu"}],
                  "readout": [{"type": "Dense", "out_dim": 1}]},
         "grid": {"depth": [1, 2, 3], "w_std": [1.0, 1.5, 2.0]}}]})

    x_train: ArrayRef
    y_train: ArrayRef
    x_val: ArrayRef | None = Field(None, description="validation inputs: adds the t = ∞ predictors' MSE "
                                   "(and accuracy, for targets of k ≥ 2 columns) to each row")
    y_val: ArrayRef | None = None
    base: dict | None = Field(None, description="an architecture, or a stack {stem, block, depth, readout} "
                              "(docs/rest.md, Sweeps); with ``grid``")
    grid: dict[str, list[Any]] | None = Field(None, description="{key: [values]}: depth, parameterization, "
                                              "activation, or any layer parameter (block.w_std, ...); the last "
                                              "key varies fastest")
    architectures: list[dict] | dict[str, dict] | None = Field(None, description="instead of base and grid: "
                                                                "architectures, or a mapping label -> architecture")
    diag_reg: Annotated[float, Field(ge=0, allow_inf_nan=False)] | Literal["fit"] = Field(
        "fit", description="ε relative to the kernel's mean diagonal, or \"fit\": the ε of the largest marginal "
        "likelihood, per architecture")
    dtype: DType | None = Field(None, description="default: NTK_DTYPE")


class SweepAnswer(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]] = Field(description="one per architecture: its row key, log_marginal_likelihood, "
                                       "output_scale, diag_reg, with a validation set nngp_mse, ntk_mse (and "
                                       "nngp_accuracy, ntk_accuracy), and error (null, or why it has no numbers)")
    cached: bool


class Progress(BaseModel):
    done: int = Field(description="tiles done")
    total: int = Field(description="tiles the job needs (0 until it is planned)")
    fraction: float = Field(ge=0, le=1, description="the job's part done, 0-1: tiles done and the layers "
                            "done inside the tiles in progress, as their workers report them (every ~0.5 s)")


class Job(BaseModel):
    id: str
    kind: Literal["kernels", "predict", "sweep"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: Progress
    estimate_s: float | None = Field(description="the job's estimated seconds on one worker, from the cost model "
                                     "and the workers' calibration, made when it was submitted")
    eta_s: float | None = Field(description="estimated seconds until it ends: the estimate's unfinished part, "
                                "then (from 10% done) the pace kept since it started; null once it ended "
                                "unsuccessfully")
    lane: Literal["interactive", "batch"] | None = Field(description="interactive: estimated under "
                                                         "NTK_INTERACTIVE_S, served ahead of batch jobs")
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    error: dict | None = Field(None, description="a problem object when the job failed")


class Accepted(BaseModel):
    job: Job


class KernelAnswer(BaseModel):
    id: str
    shape: list[int]
    nngp: list[list[float]] | None = None
    ntk: list[list[float]] | None = None
    nngp_stderr: list[list[float]] | None = None
    ntk_stderr: list[list[float]] | None = None
    cached: bool


class PredictAnswer(BaseModel):
    t: float | list[float | None] | None
    mean: list
    covariance: list | None = None
    variance: list | None = None
    labels: list | None = None
    max_learning_rate: float


class Dataset(BaseModel):
    id: str
    x_shape: list[int]
    y_shape: list[int] | None
    dtype: str
    bytes: int


class ProblemDetails(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = Field(None, description='validation: [{"path", "message"}]')
