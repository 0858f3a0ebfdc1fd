"""Batch tiles take turns per tenant: a tenant's batch jobs share NTK_TILES_IN_FLIGHT.

Each tenant has a rotation (keys.tenant_turns: its batch jobs with tiles not yet queued, next
first) and a set of its tiles in flight (keys.tenant_tiles_in_flight). Whenever the tenant has
fewer than NTK_TILES_IN_FLIGHT tiles in flight, the job at the head of its rotation hands over its
next pending tile (keys.job_pending) and goes to the tail. Redis' queue being first in, first
out, every tenant then has at most NTK_TILES_IN_FLIGHT tiles queued, each tile done queueing the
tenant's next behind everyone else's: tenants take turns a tile at a time, whether one has 16 jobs
and another 1, and within a tenant its jobs take turns.

One Lua script (``TAKE_TURNS``) makes a turn atomic, so that two workers finishing tiles at once
never queue the same tile nor more than the limit. Jobs that ended (done, cancelled, failed) leave
as they are met: a rotation entry whose job no longer runs or has nothing pending is dropped, and
so is an in-flight tile whose job no longer runs (its task is skipped, ntk.worker.middleware).
"""

from __future__ import annotations

import json

import redis

from ntk.core import keys
from ntk.core.broker import waiting

# KEYS: the tenant's rotation, its tiles in flight. ARGV: NTK_TILES_IN_FLIGHT, the tile done (a
# member of the in-flight set, or ""), the prefix of a job's hash, the suffix of its pending list.
# Returns the pending entries (JSON [job id, block name, tile]) now in flight, to be queued.
TAKE_TURNS = """
local rotation, in_flight, limit = KEYS[1], KEYS[2], tonumber(ARGV[1])
local function running(job_id)
  return redis.call('HGET', ARGV[3] .. job_id, 'status') == 'running'
end
if ARGV[2] ~= '' then redis.call('SREM', in_flight, ARGV[2]) end
for _, tile in ipairs(redis.call('SMEMBERS', in_flight)) do
  if not running(cjson.decode(tile)[1]) then redis.call('SREM', in_flight, tile) end
end
local taken = {}
while redis.call('SCARD', in_flight) < limit do
  local job_id = redis.call('LMOVE', rotation, rotation, 'LEFT', 'RIGHT')
  if not job_id then break end
  local tile = running(job_id) and redis.call('LPOP', ARGV[3] .. job_id .. ARGV[4])
  if tile then
    redis.call('SADD', in_flight, tile)
    taken[#taken + 1] = tile
  else
    redis.call('LREM', rotation, 0, job_id)
  end
end
return taken
"""


def pending_entry(job_id: str, block_name: str, tile: list[int]) -> str:
    """A tile in a job's pending list and in its tenant's in-flight set."""
    return json.dumps([job_id, block_name, list(tile)])


class TenantTurns:
    """The turns of tenants' batch tiles (module docstring), on one Redis."""

    def __init__(self, client: redis.Redis, tiles_in_flight: int):
        self.redis, self.tiles_in_flight = client, tiles_in_flight
        self.take_turns = client.register_script(TAKE_TURNS)

    def join(self, tenant: str, job_id: str, tiles: list[tuple[str, list[int]]]) -> list[tuple[str, str, list[int]]]:
        """Put the job's ``tiles`` in its pending list (replacing any, as a re-plan does) and the job
        at the head of its tenant's rotation, so that a new job's first tile comes soon; forget its
        tiles in flight (a re-plan's are lost). The tiles now in flight: (job id, block name, tile)."""
        entries = [pending_entry(job_id, block_name, tile) for block_name, tile in tiles]
        in_flight = keys.tenant_tiles_in_flight(tenant)
        mine = [t for t in self.redis.smembers(in_flight) if json.loads(t)[0] == job_id]
        pipe = self.redis.pipeline()
        pipe.delete(keys.job_pending(job_id))
        if entries:
            pipe.rpush(keys.job_pending(job_id), *entries)
        if mine:
            pipe.srem(in_flight, *mine)
        pipe.lrem(keys.tenant_turns(tenant), 0, job_id)
        if entries:
            pipe.lpush(keys.tenant_turns(tenant), job_id)
        pipe.execute()
        return self.taken(tenant, "")

    def passed(self, tenant: str, job_id: str, block_name: str, tile: list[int]) -> list[tuple[str, str, list[int]]]:
        """The tile is done (or will never be): the tiles the tenant's next jobs now put in flight."""
        return self.taken(tenant, pending_entry(job_id, block_name, tile))

    def taken(self, tenant: str, done: str) -> list[tuple[str, str, list[int]]]:
        job_prefix = keys.job("")  # keys.job(id) is this + id, keys.job_pending(id) that + ":pending"
        entries = self.take_turns(
            keys=[keys.tenant_turns(tenant), keys.tenant_tiles_in_flight(tenant)],
            args=[self.tiles_in_flight, done, job_prefix, keys.job_pending("")[len(job_prefix):]])
        return [tuple(json.loads(entry)) for entry in entries]


def waits_its_turn(client: redis.Redis, broker_client: redis.Redis, job_id: str, tenant: str) -> bool:
    """Whether the job has tiles pending while its tenant's tiles in flight are in the broker
    (ntk.core.broker.waiting): its turn will come, so the watchdog leaves it be. A tile whose
    queueing died with its worker is in flight with no message; it holds no one up for good: its
    job, stalled, is re-planned, which forgets it (``TenantTurns.join``)."""
    if not client.exists(keys.job_pending(job_id)):
        return False
    in_flight = {json.loads(tile)[0] for tile in client.smembers(keys.tenant_tiles_in_flight(tenant))}
    return any(waiting(broker_client, other) for other in in_flight - {job_id})
