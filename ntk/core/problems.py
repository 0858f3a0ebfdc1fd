"""Problem objects (RFC 9457, ``application/problem+json``) as plain dicts: what a failed job
carries in ``error`` and what the API answers. The API's FastAPI side (ntk.api.problems) raises
and renders them; the workers store them with the job."""

from __future__ import annotations

import redis


def problem(status: int, title: str, detail: str, **extra) -> dict:
    """An RFC 9457 problem object, as a failed job carries it in `error`."""
    return {"type": f"https://ntk.dev/problems/{title.lower().replace(' ', '-')}", "title": title,
            "status": status, "detail": detail, **extra}


def redis_problem(error: redis.RedisError) -> dict:
    """A Redis failure as callers should read it: full (507: free memory first) or unavailable (503: retry)."""
    if isinstance(error, redis.OutOfMemoryError):
        return problem(507, "Insufficient storage", "Redis is out of memory and holds nothing it may evict "
                       "(datasets and running jobs are kept until deleted): delete datasets you no longer "
                       "need, or raise Redis' maxmemory")
    # What redis-py says (commands, keys, addresses) is for the logs, never for an answer.
    if isinstance(error, redis.TimeoutError):
        why = "it did not answer in time"
    elif isinstance(error, redis.ConnectionError):
        why = "it cannot be reached"
    else:
        why = "it refused a command"
    return problem(503, "Redis unavailable", f"the service cannot use its Redis now ({why}); retry shortly")
