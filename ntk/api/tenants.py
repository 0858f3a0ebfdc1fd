"""Tenants: who a /v1 call is, what it may see, and what it may store.

With NTK_API_KEYS set, each key is a tenant, named in Redis by the SHA-256 of the key (hex), never
the key itself: neither a Redis dump nor a log line holds a credential. A tenant sees only its own
datasets, jobs and results; another tenant's are absent to it, answered with the very 404 an
unknown id gets. Without keys, every call is the one tenant ``default``. NTK_ADMIN_KEYS
authenticate too, each a tenant for what it uploads and submits, and see every tenant's jobs and
datasets (read, cancel, delete).

Where each rule lives:

- identity: ``identify`` (ntk.api.deps.authorize for routes, ntk.api.middleware.RateLimit);
- jobs (kernels, predictions and sweeps alike): every job names its tenant and cache scope
  (``Tenant.owner``, ntk.core.job.Owned); the job's hash holds its tenant (ntk.core.jobstate.SUBMIT),
  read before answering (ntk.api.routers.jobs); a request's key hashes the tenant, so identical
  requests of two tenants are two jobs and ``cached`` is never another tenant's answer;
- computed values: a block's id hashes ``cache_scope`` (ntk.worker.plan), the tenant unless
  NTK_SHARED_CACHE makes it "shared";
- datasets: stored per tenant (``ntk:dataset:<tenant>:<id>``): the same content uploaded by two
  tenants is two datasets, each counted against its owner's quota;
- quotas: stored dataset bytes (``STORE``, ``DELETE`` below), active jobs (SUBMIT), calls (the
  rate limit, per tenant, and per client address for calls without a valid key).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ntk.api.problems import Problem
from ntk.core.settings import Settings

DEFAULT = "default"  # the one tenant of a service without keys
SHARED = "shared"    # the cache scope of every tenant under NTK_SHARED_CACHE


@dataclass(frozen=True)
class Tenant:
    id: str
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """Whether this tenant may see what ``owner`` owns."""
        return self.admin or owner == self.id

    def cache_scope(self, settings: Settings) -> str:
        return SHARED if settings.shared_cache else self.id

    def owner(self, settings: Settings) -> dict:
        """The fields naming this tenant in a job it submits (ntk.core.job.Owned)."""
        return {"tenant": self.id, "cache_scope": self.cache_scope(settings)}


def tenant_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_key(authorization: str, allowed: list[str]) -> str | None:
    """The key of ``allowed`` that an ``Authorization: Bearer <key>`` header holds, if any.

    Every key is compared in constant time, and all of them always, so neither the time taken
    nor which key matched leaks how much of a guess was right.
    """
    scheme, _, token = authorization.partition(" ")
    token = token.strip().encode()
    matched = None
    for key in allowed:
        if hmac.compare_digest(token, key.encode()):
            matched = key
    return matched if scheme.lower() == "bearer" else None


def keys_required(settings: Settings) -> bool:
    return bool(settings.keys or settings.admins)


def identify(authorization: str, settings: Settings) -> Tenant | None:
    """The tenant a call's Authorization header names; None when keys are required and it names
    none. An admin key listed in NTK_API_KEYS too is an admin's."""
    if not keys_required(settings):
        return Tenant(DEFAULT)
    admin = bearer_key(authorization, settings.admins)
    key = admin or bearer_key(authorization, settings.keys)
    return None if key is None else Tenant(tenant_id(key), admin=admin is not None)


# Store a dataset within its tenant's quota, atomically against other uploads and deletes.
# KEYS: the dataset, the stored-bytes hash. ARGV: tenant, the dataset's bytes, the tenant's limit,
# then the dataset's fields and values. Answers {bytes the tenant stores now, how}: 'existed' (the
# tenant holds this dataset already: nothing is counted twice), 'refused' (over the limit: nothing
# is stored) or 'created'.
STORE = """
local stored = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if redis.call('EXISTS', KEYS[1]) == 1 then return {stored, 'existed'} end
if stored + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {stored, 'refused'} end
redis.call('HSET', KEYS[1], 'bytes', ARGV[2], unpack(ARGV, 4))
return {redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2]), 'created'}
"""

# Delete a dataset and release its bytes. KEYS: the dataset, the stored-bytes hash. ARGV: its
# tenant. Answers 1 if it deleted the dataset (of two deletes at once, one releases the bytes).
DELETE = """
local bytes = redis.call('HGET', KEYS[1], 'bytes')
if not bytes then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('HINCRBY', KEYS[2], ARGV[1], -tonumber(bytes)) <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
return 1
"""


def over_storage_quota(stored: int, size: int, limit: int) -> Problem:
    """507 Insufficient Storage, as RFC 4331 answers a quota exceeded: the same upload succeeds once
    the tenant deletes datasets, which is what the client can do (413 would tell it to send less,
    which does not help; the SDK does not retry a 507, as it should not)."""
    setting = Settings.env("tenant_max_bytes")
    return Problem(507, "Storage quota exceeded",
                   f"this dataset is {size} bytes and this tenant stores {stored} bytes of datasets: {stored + size} "
                   f"bytes would be over the limit of {limit} bytes ({setting}); delete datasets you no longer "
                   "need (DELETE /v1/datasets/{id})", value=stored + size, limit=limit, setting=setting)


def over_active_jobs(active: int, limit: int) -> Problem:
    """429 Too Many Requests: the tenant has as many jobs queued or running as it may. No Retry-After:
    when one of them ends is not known here; the SDK backs off and retries a 429 by itself."""
    setting = Settings.env("tenant_max_active_jobs")
    return Problem(429, "Too many active jobs",
                   f"this tenant has {active} jobs queued or running, the most {setting} allows ({limit}): "
                   "wait for one to end, or cancel one (DELETE /v1/jobs/{id})", value=active + 1, limit=limit,
                   setting=setting)
