"""Every knob of the service, read once from the environment (``NTK_*``).

The API, the workers and ``ntk serve`` all read this one class, so a setting means the same thing
in every process.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Literal

import limits
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ntk.spec.architecture import LAYERS_CEILING, MAX_LAYERS

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def machine_memory_bytes() -> int:
    """This machine's memory, or the container's limit (cgroup v2) where that is smaller."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as limit:
            return min(memory, int(limit.read()))
    except (OSError, ValueError):  # no cgroup v2, or "max"
        return memory


def default_max_train_points() -> int:
    """The most training points whose float64 train matrix (8 N² bytes) is a sixth of the memory,
    in thousands: the join's worker holds one such matrix, Redis two (the matrix's tiles, both
    kernels over one triangle, and its factorization), and half the memory stays for the other
    workers, the API and the system. 24 GB: √(24e9 / 6 / 8) = 22,360 → 22,000; 8 GB: 12,000."""
    return max(1000, math.isqrt(machine_memory_bytes() // (6 * 8)) // 1000 * 1000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NTK_", extra="ignore")

    redis_url: str | None = Field(None, description="Redis for cache, jobs and datasets; unset: "
                                  "`ntk serve` starts an embedded Valkey")
    broker_url: str | None = Field(None, description="Redis for the Dramatiq queue (default: redis_url)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    dtype: Literal["float32", "float64"] = Field("float64", description="kernels' and predictions' dtype when a "
                                                 "request names none")
    tile: int = Field(2048, ge=1, description="Gram matrices are computed in tiles of this many rows/columns")
    block_bytes: int = Field(1 << 30, ge=1, description="the engine's working set for one block of a tile (on a GPU, "
                             "about ten kernel tensors); a tile is computed in blocks that fit")
    cache_bytes: int = Field(2 << 20, ge=1, description="on a CPU, one kernel tensor of a block, sized for the L2 "
                             "cache")
    cache_ttl_s: int = Field(7 * 86400, ge=1, description="lifetime of cached tiles and factorizations")
    api_keys: str = Field("", description="comma-separated bearer keys, each a tenant: its datasets, jobs and "
                          "results are visible only to it (others get 404) and it has quotas of its own "
                          "(NTK_TENANT_*); empty: no auth, one tenant")
    admin_keys: str = Field("", description="comma-separated bearer keys of administrators: they authenticate "
                            "like NTK_API_KEYS (each is a tenant for what it uploads and submits) and may read, "
                            "cancel and delete every tenant's jobs and datasets")
    shared_cache: bool = Field(False, description="share computed tiles and factorizations between tenants, "
                               "for single-team deployments: a tenant's request then reuses what another's "
                               "computed, and may learn so from `cached` or the answer's speed. Jobs, results "
                               "and datasets stay per tenant")
    tenant_max_bytes: int = Field(1 << 30, ge=1, description="most bytes of datasets one tenant stores, counted "
                                  "as the arrays' bytes after decompression (the `bytes` of a dataset); an "
                                  "upload beyond is refused (507) until datasets are deleted")
    tenant_max_active_jobs: int = Field(16, ge=1, description="most jobs one tenant has queued or running at "
                                        "once; a request that would make another is refused (429) until one "
                                        "ends (succeeds, fails or is cancelled)")
    metrics_key: str = Field("", description="bearer key /metrics asks for; empty: /metrics is open")
    rate_limit: str = Field("600/minute", description="/v1 calls allowed per tenant (API key), and per client "
                            "address for calls without a valid key (all calls without NTK_API_KEYS), as `limits` "
                            "writes it: '600/minute', '20 per 5 seconds'; empty: no limit")

    # The API's Redis client (ntk.api.deps.redis_client): a Redis that is down is noticed at connect;
    # a busy machine only makes replies slow, and slow is not down.
    redis_connect_timeout_s: float = Field(2.0, gt=0, description="how long the API tries to connect to "
                                           "Redis before it answers 503 (Redis unavailable)")
    redis_timeout_s: float = Field(30.0, gt=0, description="how long the API waits for one Redis reply; one "
                                   "slower than this is retried once, on a fresh connection, before the call "
                                   "answers 503")
    redis_max_connections: int = Field(64, ge=1, description="Redis connections of one API process; a call "
                                       "beyond them waits for a free one (up to NTK_REDIS_TIMEOUT_S)")
    client_timeout_s: float = Field(30.0, gt=0, description="how long a client may take to send a request's "
                                    "headers, from its first byte (or from connecting); its body gets this long "
                                    "plus its size at NTK_CLIENT_MIN_BYTES_PER_S. Slower clients are "
                                    "disconnected (ntk.api.slow_clients)")
    client_min_bytes_per_s: float = Field(65536.0, gt=0, description="the slowest pace at which a request body "
                                          "is accepted, after the NTK_CLIENT_TIMEOUT_S grace")
    parse_concurrency: int = Field(0, ge=0, description="request bodies the API parses, hashes and packs at "
                                   "once, each in a thread (0: one per core); the others wait their turn, so "
                                   "that Redis replies and health probes are still served")

    # Request limits. Each refusal is a problem naming the limit, the value and the NTK_ setting.
    max_body_bytes: int = Field(256 << 20, ge=1, description="largest request body (413 beyond)")
    max_json_bytes: int = Field(16 << 20, ge=1, description="largest JSON body (413 beyond): parsed JSON "
                                "takes several times its size in memory, so large arrays travel as npy/npz, "
                                "uploaded with POST /v1/datasets")
    max_points: int = Field(100_000, ge=1, description="most points in one request (x1 + x2, or train + test) "
                            "or one dataset")
    max_features: int = Field(1 << 18, ge=1, description="most numbers in one point: d, L·C or H·W·C")
    max_kernel_entries: int = Field(16_000_000, ge=1, description="most entries of one matrix a request computes "
                                    "or answers: N1 × N2; for predictions test × train and, with compute_cov, "
                                    "times × test × test (train × train is NTK_MAX_TRAIN_POINTS')")
    max_pair_covariances: int = Field(1 << 24, ge=1, description="most covariances the analytic kernel tracks "
                                      "per pair of points: one per position (H·W), or with pooling one per pair "
                                      "of positions ((H·W)²); each takes about 80 bytes of worker memory")
    max_train_points: int = Field(default_factory=default_max_train_points, ge=1, description="most training "
                                  "points of a prediction; default: those whose float64 train matrix (8 N² bytes) "
                                  "takes a sixth of the machine's memory, in thousands (22,000 on 24 GB). The "
                                  "factorization's time is cubic in them")
    max_times: int = Field(1000, ge=1, description="most values of t in one prediction")
    max_layers: int = Field(MAX_LAYERS, ge=1, le=LAYERS_CEILING, description="the deepest architecture accepted, "
                            "layers inside Residual blocks counted; a kernel's time is linear in depth. At most "
                            f"{LAYERS_CEILING}, the most layers one list may hold while parsing")
    max_sweep_architectures: int = Field(1024, ge=1, description="most architectures one sweep (POST /v1/sweeps) "
                                         "expands to: its grid's product, or its list; one sweep is one job, "
                                         "its time about linear in them")
    sweep_bytes: int = Field(2 << 30, ge=1, description="a worker's memory for the kernels of the architectures a "
                             "sweep computes together, sharing their common layers; beyond it the sweep runs in "
                             "groups that fit (at least one architecture's kernels at a time)")
    max_mc_samples_width: int = Field(1 << 25, ge=1, description="Monte Carlo: most samples × the widest layer "
                                      "(out_dim or out_chan), which an estimate's time and memory grow with")
    max_mc_parameters: int = Field(1 << 28, ge=1, description="Monte Carlo: most parameters of one sampled "
                                   "network (fan-in × out_dim per Dense, in_chan × filter taps × out_chan per "
                                   "Conv, and biases); a worker holds one network at a time, 8 bytes a parameter "
                                   "in float64: 2 GiB at the default")
    max_mc_sampled_parameters: int = Field(1 << 35, ge=1, description="Monte Carlo: most samples × the "
                                           "parameters of one network, the random numbers an estimate draws "
                                           "(100 samples of a network at NTK_MAX_MC_PARAMETERS fit)")

    # Cost-based admission, deadlines and lanes (ntk.core.estimate, ntk.worker.watch).
    max_job_seconds: float = Field(3600.0, gt=0, description="the longest a job may be estimated to take on one "
                                   "worker (its work by ntk.spec.cost × the fastest live worker's calibrated "
                                   "seconds per unit); longer jobs are refused with 422 before anything is queued. "
                                   "A job's deadline is its estimate × NTK_DEADLINE_MARGIN + "
                                   "NTK_DEADLINE_SLACK_S, at most this × NTK_DEADLINE_MARGIN")
    deadline_margin: float = Field(3.0, ge=1, description="a job may use this many times its estimated worker "
                                   "seconds (plus NTK_DEADLINE_SLACK_S) before it fails with 504 Deadline exceeded")
    deadline_slack_s: float = Field(10.0, ge=0, description="seconds added to every job's deadline, for the "
                                    "tasks' fixed costs that the cost model does not count")
    default_seconds_per_unit: float = Field(2e-9, gt=0, description="seconds per unit of work (ntk.spec.cost) "
                                            "assumed until a worker has calibrated its device at start: a slow "
                                            "CPU's (a unit is ~1 ns on a 2-core EPYC)")
    worker_memory_bytes: int = Field(0, ge=0, description="memory one tile may use on a worker; 0: the smallest "
                                     "the live workers report (machine or GPU memory), or this machine's before "
                                     "any has. Jobs whose tile needs more are refused with 422")
    tile_target_s: float = Field(10.0, gt=0, description="tiles are cut smaller than NTK_TILE (in powers of two) "
                                 "until one takes at most this long by the estimate: what a cancel or an "
                                 "interactive job waits for at most")
    interactive_s: float = Field(2.0, ge=0, description="jobs estimated under this many seconds go to the "
                                 "interactive lane, which workers serve ahead of the batch lane")
    fast_path_s: float = Field(0.5, ge=0, description="a kernel or prediction job estimated under this many "
                               "seconds whose every block is one tile is planned, computed and answered by one "
                               "task, without the hand-offs between plan, tiles and join (nor a batch turn: it "
                               "is that cheap); 0: every job takes the three steps")
    tiles_in_flight: int = Field(2, ge=1, description="batch tiles of one tenant queued at once, shared by "
                                 "its jobs; each tile done queues the tenant's next (its jobs in turn) behind "
                                 "the other tenants' tiles, so tenants take turns however many jobs each has")

    job_ttl_s: int = Field(86400, ge=1, description="how long finished jobs and their results are kept")
    heartbeat_timeout_s: float = Field(20.0, gt=0, description="a worker silent this long is dead: "
                                       "Dramatiq re-delivers its unacknowledged task")
    maintenance_chance: int = Field(50_000, ge=1, le=1_000_000, description="Dramatiq queue maintenance "
                                    "(requeueing dead workers' tasks) per million broker commands")
    worker_beat_s: float = Field(2.0, gt=0, description="how often workers report themselves alive")
    worker_poll_ms: int = Field(50, ge=5, le=10_000, description="the longest an idle worker waits before "
                                "looking at the queue again (Dramatiq's worker_timeout, 1000 by default); an "
                                "enqueue wakes an idle worker at once (ntk.core.broker: Waking), so this bounds "
                                "only how late a wake-up lost with a connection or a delayed retry is seen")
    poison_deliveries: int = Field(3, ge=1, description="a task delivered this often without finishing "
                                   "(it keeps killing its worker) fails its job")
    job_stall_s: float = Field(900.0, gt=0, description="a running job without progress this long, none of "
                               "whose tasks is still queued or in a worker's hands, is re-planned")
    embedded_maxmemory: str = Field("auto", description="maxmemory of the Valkey `ntk serve` embeds; auto: a "
                                    "third of the machine's memory, which holds the tiles and the factorization "
                                    "of a prediction at NTK_MAX_TRAIN_POINTS")
    value_chunk_bytes: int = Field(4 << 20, ge=1 << 12, description="tiles, factorizations and answers larger "
                                   "than this are stored in chunks of this size (ntk.core.keys); below Redis' "
                                   "proto-max-bulk-len")

    log_format: Literal["json", "text"] = Field("json", description="json: one object per line (ts, level, "
                                                "logger, msg, request_id, job_id, ...); text: for a terminal")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("rate_limit")
    @classmethod
    def _parses(cls, value: str) -> str:
        if value.strip():
            limits.parse(value)  # raises ValueError naming what it could not read
        return value.strip()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value):
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def env(cls, field: str) -> str:
        """The environment variable that sets ``field``: what a refusal tells an operator to raise."""
        return f"{cls.model_config['env_prefix']}{field.upper()}"

    @property
    def redis(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def admins(self) -> list[str]:
        return [k.strip() for k in self.admin_keys.split(",") if k.strip()]

    @property
    def embedded_valkey_maxmemory(self) -> str:
        auto = self.embedded_maxmemory.strip().lower() == "auto"
        return str(machine_memory_bytes() // 3) if auto else self.embedded_maxmemory

    @property
    def live_worker_s(self) -> float:
        """A worker whose last beat is older than this is counted dead by /readyz."""
        return 3 * self.worker_beat_s


@lru_cache
def get_settings() -> Settings:
    return Settings()
