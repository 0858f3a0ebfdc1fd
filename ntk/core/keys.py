"""The Redis key layout, shared by the API and the workers.

Under ``maxmemory-policy volatile-lru`` only keys with a TTL can be evicted, so the TTL is the
durability class: datasets, active jobs, the live-worker set and Dramatiq's queue keys have none
and are never evicted; tiles, factorizations and finished jobs' results have one and are
recomputed (or re-requested) when evicted, as are the rate limiter's counters (``ntk:ratelimit:``,
ntk.api.middleware.RateLimit), which expire with their window.

Every key, and how long it lives
--------------------------------
``<t>`` is a tenant: the SHA-256 (hex) of its API key, never the key (``default`` without keys;
ntk.api.tenants). ``<request>`` is a request's key (ntk.core.job.request_key), which hashes the
tenant with the request, so single flight and the answer cache never cross tenants.

    ntk:dataset:<t>:<id>             hash: meta, bytes, x, y           until DELETE
    ntk:tenants:bytes                hash: <t> -> bytes of its datasets until its last dataset goes
    ntk:jobs:active                  zset: job -> last progress         (members leave as jobs end)
    ntk:jobs:active:<t>              set: <t>'s queued/running jobs     (members leave as jobs end)
    ntk:job:<job>                    hash: the job                      none while active; NTK_JOB_TTL_S once ended
    ntk:job:<job>:inputs             hash: inline arrays                as the job
    ntk:job:<job>:done               set: its tiles found or computed   as the job
    ntk:job:<job>:pending            list: a batch job's unqueued tiles as the job
    ntk:turns:<t>                    list: <t>'s batch jobs with        none; a job leaves when met with
                                     tiles pending, next turn first     nothing pending or ended
    ntk:turns:<t>:in-flight          set: <t>'s batch tiles queued      none; a tile leaves when done, or
                                                                        when met with its job ended
    ntk:job:<job>:result             the answer (or its manifest)       NTK_JOB_TTL_S, evictable
    ntk:inflight:<request>           the active job of a request        until that job ends
    ntk:answer:<request>             the last job that answered it      NTK_JOB_TTL_S
    ntk:tile:<block>:<i0>-<i1>:<j0>-<j1>  both kernels of one tile      NTK_CACHE_TTL_S, evictable
    ntk:factorization:<key>          a train kernel's factorization     NTK_CACHE_TTL_S, evictable
    ntk:max-lr:<block>               a train NTK's max learning rate    NTK_CACHE_TTL_S, evictable
    ntk:chunk:<digest>               a chunk of a large value           its value's TTL, evictable
    ntk:workers                      zset: worker -> last beat          pruned by /readyz after an hour
    ntk:calibrations                 hash: worker -> its calibration    forever (one field a worker)
    ntk:stats                        hash: the workers' counters        forever (a few fields)
    ntk:deliveries:<message>         a task's deliveries                one day
    ntk:watchdog:<job>               a re-plan's lock                   NTK_JOB_STALL_S
    ntk:wake:<queue>                 list: a lane's wake tokens, in     none; at most 64 tokens, each
                                     the broker's Redis (broker.py)     taken by the worker it wakes
    ntk:jobs:ended                   channel: ids of jobs as they end   (pub/sub: nothing is kept)
    ntk:ratelimit:...                the rate limiter's windows         their window; one per tenant, or per
                                                                        address for calls without a valid key

A block's id (so a tile's, a factorization's and a max-lr's key) hashes the tenant too, unless
``NTK_SHARED_CACHE`` is set (ntk.worker.plan.block): computed values are per tenant by default.

Values in chunks
----------------
A tile, a factorization or a job's result (an npz, ntk.core.codec) may be larger than Redis takes
in one string (``proto-max-bulk-len``, 512 MB by default), and one large string blocks Redis while
it is copied. So a value over ``NTK_VALUE_CHUNK_BYTES`` (4 MiB) is stored as chunks::

    ntk:factorization:<key>   "ntk-chunks/1\n" + JSON [[digest, length], ...]   (the manifest)
    ntk:chunk:<digest>        bytes of one chunk, at most NTK_VALUE_CHUNK_BYTES

and a smaller value is its key's own bytes (an npz starts "PK", never the manifest's magic).
A chunk is named by the hash of its content (codec.chunk_digest): its bytes never change, so
two workers writing the same value at once write the same keys, and a reader can never mix
chunks of two writes. Writers send the chunks in pipelines as the value is serialized, and the
manifest last: whoever finds the manifest finds every chunk written. Chunks take the TTL of
their value (cache: NTK_CACHE_TTL_S; results: NTK_JOB_TTL_S), so volatile-lru may evict any of
them: a value with a chunk missing is gone, as if its manifest were (recomputed, or 410).
"""

from __future__ import annotations

PREFIX = "ntk"

# no TTL: kept until deleted
ACTIVE_JOBS = f"{PREFIX}:jobs:active"      # zset job id -> time of its last progress (the watchdog's view)
WORKERS = f"{PREFIX}:workers"              # zset worker id -> time of its last beat
STATS = f"{PREFIX}:stats"                  # hash of counters the workers produce, exposed by /metrics
CALIBRATIONS = f"{PREFIX}:calibrations"    # hash worker id -> JSON {device, seconds_per_unit, memory_bytes}
STORED_BYTES = f"{PREFIX}:tenants:bytes"   # hash tenant -> bytes of its datasets (NTK_TENANT_MAX_BYTES)
# pub/sub channel, nothing stored: every job's id as it ends (ntk.core.jobstate.END), which the API's
# waiters listen to rather than polling the job (ntk.api.jobs.Endings)
JOBS_ENDED = f"{PREFIX}:jobs:ended"


def dataset(tenant: str, dataset_id: str) -> str:
    """hash: meta (JSON), bytes (counted against the tenant's quota), x and y (npy bytes)."""
    return f"{PREFIX}:dataset:{tenant}:{dataset_id}"


def tenant_active_jobs(tenant: str) -> str:
    """set of the tenant's job ids that were queued or running when last looked at
    (NTK_TENANT_MAX_ACTIVE_JOBS); ended jobs leave it as they end, and stragglers when it is counted."""
    return f"{ACTIVE_JOBS}:{tenant}"


def job(job_id: str) -> str:
    """hash: status, kind, times, progress total, request (JSON), answer meta, error (JSON)."""
    return f"{PREFIX}:job:{job_id}"


def job_inputs(job_id: str) -> str:
    """hash: digest -> npy bytes of the arrays a job was sent inline."""
    return f"{PREFIX}:job:{job_id}:inputs"


def job_tiles_done(job_id: str) -> str:
    """set of the tile keys this job found or computed, or of a sweep's architectures done (its progress)."""
    return f"{PREFIX}:job:{job_id}:done"


def job_result(job_id: str) -> str:
    """npz bytes of the answer's arrays, or their manifest (TTL NTK_JOB_TTL_S)."""
    return f"{PREFIX}:job:{job_id}:result"


def inflight(request_key: str) -> str:
    """the id of the job computing this request now: identical requests join it (single flight)."""
    return f"{PREFIX}:inflight:{request_key}"


def answer(request_key: str) -> str:
    """the id of the last job that answered this request (TTL): a repeat is served from its result."""
    return f"{PREFIX}:answer:{request_key}"


def deliveries(message_id: str) -> str:
    """how often a task was delivered without finishing (the poison-task guard)."""
    return f"{PREFIX}:deliveries:{message_id}"


def job_pending(job_id: str) -> str:
    """list of JSON [job id, block name, tile] of a batch job's tiles not yet queued (ntk.worker.turns)."""
    return f"{PREFIX}:job:{job_id}:pending"


def tenant_turns(tenant: str) -> str:
    """list of the tenant's batch job ids with tiles pending, the next to queue one first (ntk.worker.turns)."""
    return f"{PREFIX}:turns:{tenant}"


def tenant_tiles_in_flight(tenant: str) -> str:
    """set of the tenant's batch tiles queued or computing, as pending entries: at most NTK_TILES_IN_FLIGHT."""
    return f"{PREFIX}:turns:{tenant}:in-flight"


def queue_wake(queue: str) -> str:
    """list, in the broker's Redis, of tokens that wake an idle worker of the queue (ntk.core.broker: Waking)."""
    return f"{PREFIX}:wake:{queue}"


def watchdog_lock(job_id: str) -> str:
    return f"{PREFIX}:watchdog:{job_id}"


# TTL: cache entries, evictable
def tile(block_id: str, tile: tuple[int, int, int, int]) -> str:
    """npz bytes (or manifest) of one tile of a Gram matrix, both kernels."""
    i0, i1, j0, j1 = tile
    return f"{PREFIX}:tile:{block_id}:{i0}-{i1}:{j0}-{j1}"


def factorization(key: str) -> str:
    """npz bytes (or manifest) of a train kernel's factorization (ntk.worker.store.factorization_arrays)."""
    return f"{PREFIX}:factorization:{key}"


def chunk(digest: str) -> str:
    """bytes of one chunk of a large value (see "Values in chunks"), named by its content."""
    return f"{PREFIX}:chunk:{digest}"


def max_learning_rate(block_id: str) -> str:
    """the train NTK's max learning rate per target entry (it scales linearly with y_train.size)."""
    return f"{PREFIX}:max-lr:{block_id}"


def eviction_risk(policy: str) -> str | None:
    """What is wrong with a Redis ``maxmemory-policy`` for this layout, if anything."""
    if policy.startswith("allkeys"):
        return (f"Redis maxmemory-policy is {policy}: it may evict datasets, running jobs and queued tasks; "
                "use volatile-lru, which evicts only cache entries")
    if policy == "noeviction":
        return ("Redis maxmemory-policy is noeviction: cached tiles are never evicted, so once memory is full "
                "every write fails (507) until datasets are deleted; volatile-lru evicts the cache instead")
    return None
