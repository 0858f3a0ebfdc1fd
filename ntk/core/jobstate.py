"""A job's life in Redis: created (single flight), running, and ended exactly once.

Transitions are Lua scripts so that they are atomic against each other: a cancel racing a worker's
"succeeded" ends the job once, and sixteen identical submissions racing each other create one job.
The API runs the same scripts through redis.asyncio; the workers through the blocking client.
"""

from __future__ import annotations

import json
import logging
import time

from ntk.core import keys
from ntk.core.job import AnyJob

log = logging.getLogger("ntk.worker")

ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
# Job hash fields "partial:<worker>": the part (0-1) of its tile in progress a worker has done
# (ntk.worker.watch), for the job's progress between tiles.
PARTIAL = "partial:"

# Single flight: the job that answers a request is decided here, once, by Redis. KEYS: answer,
# inflight, new job, its inputs, active-jobs zset, the tenant's active-jobs set. ARGV: new job id,
# now, kind, request JSON, request key, job key prefix, result key suffix, request id, tenant, the
# most active jobs a tenant may have, the count of the plan's fields and values (ntk.core.estimate:
# tile, estimate, deadline, lane) and them, then digest and npy bytes of each inline input. Answers
# {job id, how}: 'answered' by an ended job whose result is still kept, 'joined' to an active one,
# or 'created' (the new job, queued with its inputs); or {active jobs, 'refused'} when the tenant
# already has its most active jobs (answering or joining makes no job, so is never refused). The
# answer is looked up here rather than before the script, so that a job ending in between cannot
# leave a request to make a second one. Run twice with the same ARGV (a client retrying after a
# reply was lost), the script finds the job its first run created: the caller knows it by its id
# and queues it once. The request key hashes the tenant (ntk.core.job.request_key): tenants
# never answer or join each other's jobs.
#
# The tenant's active jobs are a set of ids rather than a counter: END removes a job as it ends,
# and here, before counting, any member whose job is no longer queued or running (or is gone)
# leaves too, so no path that ends a job can leave the count too high for good.
SUBMIT = """
local answered = redis.call('GET', KEYS[1])
if answered and redis.call('EXISTS', ARGV[6] .. answered, ARGV[6] .. answered .. ARGV[7]) == 2 then
  return {answered, 'answered'}
end
local current = redis.call('GET', KEYS[2])
if current then
  local status = redis.call('HGET', ARGV[6] .. current, 'status')
  if status == 'queued' or status == 'running' then return {current, 'joined'} end
end
local active = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  local status = redis.call('HGET', ARGV[6] .. id, 'status')
  if status == 'queued' or status == 'running' then active = active + 1 else redis.call('SREM', KEYS[6], id) end
end
if active >= tonumber(ARGV[10]) then return {active, 'refused'} end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'status', 'queued', 'created_at', ARGV[2], 'kind', ARGV[3],
           'request', ARGV[4], 'request_key', ARGV[5], 'request_id', ARGV[8], 'tenant', ARGV[9])
local planned = tonumber(ARGV[11])
if planned > 0 then redis.call('HSET', KEYS[3], unpack(ARGV, 12, 11 + planned)) end
if #ARGV > 11 + planned then redis.call('HSET', KEYS[4], unpack(ARGV, 12 + planned)) end
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
return {ARGV[1], 'created'}
"""

# KEYS: job. ARGV: now. Answers the job's hash after the attempt (flat: field, value, ...; empty
# when the job is gone), so that a task's start and its read of the job are one round trip.
START = """
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: job, inputs, done set, result, active zset, inflight, answer, stats, pending tiles, the
# channel of ended jobs. ARGV: job id, final status, now, error JSON or '', answer meta JSON or '',
# ttl, the prefix of a tenant's active-jobs set (the job's tenant is in its hash). Answers 1 if it
# ended the job, which it then announces on the channel (keys.JOBS_ENDED): the API's waiters
# learn of it there (ntk.api.jobs.Endings) rather than by polling the job.
END = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'answer', ARGV[5]) end
redis.call('ZREM', KEYS[5], ARGV[1])
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if tenant then redis.call('SREM', ARGV[7] .. tenant, ARGV[1]) end
if redis.call('GET', KEYS[6]) == ARGV[1] then redis.call('DEL', KEYS[6]) end
if ARGV[2] == 'succeeded' then redis.call('SET', KEYS[7], ARGV[1], 'EX', ARGV[6]) end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
redis.call('HINCRBY', KEYS[8], 'jobs_' .. ARGV[2], 1)
redis.call('DEL', KEYS[9])
redis.call('PUBLISH', KEYS[10], ARGV[1])
return 1
"""


def job_fields(flat: list[bytes]) -> dict[str, str]:
    """A job's hash as a script returns HGETALL's reply (field, value, field, value, ...)."""
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def submit_call(job_id: str, request: AnyJob, request_key: str, request_id: str, inline: dict[str, bytes],
                max_active_jobs: int, planned: dict[str, str] | None = None) -> tuple[list, list]:
    """KEYS and ARGV of SUBMIT; ``request_id`` is the HTTP request's (ntk.core.logs), kept for the job's
    logs; ``inline`` the npy bytes of the request's inline arrays by digest, stored with a new job;
    the job's tenant may have at most ``max_active_jobs`` queued or running; ``planned`` more
    fields of a new job (``Estimate.fields``)."""
    planned = [item for field_and_value in (planned or {}).items() for item in field_and_value]
    return ([keys.answer(request_key), keys.inflight(request_key), keys.job(job_id), keys.job_inputs(job_id),
             keys.ACTIVE_JOBS, keys.tenant_active_jobs(request.tenant)],
            [job_id, time.time(), request.kind, request.model_dump_json(), request_key, keys.job(""),
             keys.job_result(job_id).removeprefix(keys.job(job_id)), request_id, request.tenant, max_active_jobs,
             len(planned), *planned,
             *(item for digest_and_bytes in inline.items() for item in digest_and_bytes)])


def end_call(job_id: str, request_key: str, status: str, ttl: int, *, error: dict | None = None,
             answer: dict | None = None) -> tuple[list, list]:
    """KEYS and ARGV of END."""
    return ([keys.job(job_id), keys.job_inputs(job_id), keys.job_tiles_done(job_id), keys.job_result(job_id),
             keys.ACTIVE_JOBS, keys.inflight(request_key), keys.answer(request_key), keys.STATS,
             keys.job_pending(job_id), keys.JOBS_ENDED],
            [job_id, status, time.time(), json.dumps(error) if error else "", json.dumps(answer) if answer else "", ttl,
             keys.tenant_active_jobs("")])


class Jobs:
    """Blocking job transitions, for the workers."""

    def __init__(self, redis, ttl: int):
        self.redis = redis
        self.ttl = ttl
        self._start = redis.register_script(START)
        self._end = redis.register_script(END)

    def get(self, job_id: str) -> dict:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(keys.job(job_id)).items()}

    def start(self, job_id: str) -> dict:
        """Mark a queued job running; answers the job as it then is (empty when it is gone)."""
        return job_fields(self._start(keys=[keys.job(job_id)], args=[time.time()]) or [])

    def end(self, job: dict, status: str, *, error: dict | None = None, answer: dict | None = None) -> bool:
        k, a = end_call(job["id"], job["request_key"], status, self.ttl, error=error, answer=answer)
        return bool(self._end(keys=k, args=a))

    def fail(self, job: dict, error: dict) -> bool:
        ended = self.end(job, "failed", error=error)
        if ended:
            log.warning("failed: %d %s: %s", error["status"], error["title"], error["detail"])
        return ended

    def touch(self, job_id: str) -> None:
        """Record progress, for the watchdog (only while the job is active)."""
        self.redis.zadd(keys.ACTIVE_JOBS, {job_id: time.time()}, xx=True)
