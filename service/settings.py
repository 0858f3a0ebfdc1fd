"""Every knob of the service, read once from the environment (``NTK_*``).

The API, the workers and ``ntk serve`` all read this one class, so a setting means the same thing
in every process.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NTK_", extra="ignore")

    redis_url: str | None = Field(None, description="Redis for cache, jobs and datasets; unset: "
                                  "`ntk serve` starts an embedded Valkey")
    broker_url: str | None = Field(None, description="Redis for the Dramatiq queue (default: redis_url)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    dtype: Literal["float32", "float64"] = "float64"
    tile: int = Field(2048, ge=1, description="Gram matrices are computed in tiles of this many rows/columns")
    cache_ttl_s: int = Field(7 * 86400, ge=1, description="lifetime of cached tiles and factorizations")
    api_keys: str = Field("", description="comma-separated bearer keys; empty: no auth")
    max_body_bytes: int = Field(256 << 20, ge=1)
    max_points: int = Field(100_000, ge=1, description="most points (x1 + x2, or train + test) in one request")

    job_ttl_s: int = Field(86400, ge=1, description="how long finished jobs and their results are kept")
    heartbeat_timeout_s: float = Field(20.0, gt=0, description="a worker silent this long is dead: "
                                       "Dramatiq re-delivers its unacknowledged task")
    maintenance_chance: int = Field(50_000, ge=1, le=1_000_000, description="Dramatiq queue maintenance "
                                    "(requeueing dead workers' tasks) per million broker commands")
    worker_beat_s: float = Field(2.0, gt=0, description="how often workers report themselves alive")
    poison_deliveries: int = Field(3, ge=1, description="a task delivered this often without finishing "
                                   "(it keeps killing its worker) fails its job")
    job_stall_s: float = Field(900.0, gt=0, description="a job without progress this long is re-planned")
    embedded_maxmemory: str = Field("2gb", description="maxmemory of the Valkey `ntk serve` embeds")

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
    def live_worker_s(self) -> float:
        """A worker whose last beat is older than this is counted dead by /readyz."""
        return 3 * self.worker_beat_s


@lru_cache
def get_settings() -> Settings:
    return Settings()
