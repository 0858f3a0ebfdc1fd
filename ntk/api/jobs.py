"""Jobs seen from the API: submit (single flight), wait a while, render, answer."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timezone

import numpy as np
import redis
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ntk.core import logs
from ntk.api.inputs import ON_LOOP_BYTES, off_loop
from ntk.api.problems import Problem, respond
from ntk.api.tenants import over_active_jobs
from ntk.core import keys, table
from ntk.core.broker import PLAN, enqueue
from ntk.core.codec import MANIFEST_MAGIC, TAIL_BYTES, Manifest, appended, spans, unpack
from ntk.core.jobstate import PARTIAL, TERMINAL, end_call, job_fields, submit_call
from ntk.core.problems import redis_problem
from ntk.core.job import AnyJob, KernelJob, PredictJob, request_key, times_as_floats
from ntk.core.estimate import Capacity, Estimate, estimate
from ntk.core.settings import Settings, machine_memory_bytes
from ntk.api import limits

log = logging.getLogger("ntk.api")

NPZ = "application/x-npz"
CSV = "text/csv"
JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as submit makes them
QVALUE = re.compile(r"0(\.\d{0,3})?|1(\.0{0,3})?")  # an Accept weight, RFC 9110 §12.4.2


def preference(accept: str, media_type: str) -> tuple[float, int]:
    """How much an Accept header wants ``media_type`` (RFC 9110 §12.5.1): the q of the most
    specific range that matches it (type/subtype 2, type/* 1, */* 0) and that specificity;
    (0, -1) when no range matches. A range without q has q = 1."""
    wanted_type = media_type.split("/")[0]
    best = (-1, 0.0)  # (specificity, q)
    for item in accept.split(","):
        media_range, *parameters = [part.strip() for part in item.split(";")]
        media_range = media_range.lower()
        specificity = {media_type: 2, f"{wanted_type}/*": 1, "*/*": 0}.get(media_range, -1)
        if specificity <= best[0]:
            continue
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q" and QVALUE.fullmatch(value.strip()):
                q = float(value)
        best = (specificity, q)
    return best[1], best[0]


def wants(request: Request, media_type: str) -> bool:
    """``media_type`` (npz; a sweep's CSV) when the caller names it and wants it at least as much as
    JSON; JSON otherwise (a wildcard alone, or an Accept that wants neither, gets JSON: it is the
    default answer)."""
    accept = request.headers.get("Accept", "")
    q, specificity = preference(accept, media_type)
    return specificity == 2 and q > 0 and q >= preference(accept, "application/json")[0]


async def capacity(r, settings: Settings) -> Capacity:
    """The live workers' calibrations (ntk.core.estimate.Capacity)."""
    pipe = r.pipeline(transaction=False)
    pipe.zrangebyscore(keys.WORKERS, time.time() - settings.live_worker_s, "+inf")
    pipe.hgetall(keys.CALIBRATIONS)
    live, reports = await pipe.execute()
    live = set(live)
    return Capacity.of(settings, [json.loads(v) for k, v in reports.items() if k in live], machine_memory_bytes())


async def admit(request: Request, job: AnyJob, path: str) -> Estimate:
    """The job's estimate, or a 422 when it is over NTK_MAX_JOB_SECONDS or a worker's memory."""
    settings = request.app.state.settings
    available = await capacity(request.app.state.redis, settings)
    estimated = estimate(job, settings, available)
    limits.check_estimate(settings, estimated, available, path)
    return estimated


async def submit(request: Request, submitted: AnyJob, key: str, inline: dict[str, bytes], estimated: Estimate,
                 job_id: str) -> tuple[str, bool]:
    """The id of the job answering this request (``key``: its request_key; ``job_id`` when it is a
    new one), and whether it
    was already there (answered or running): then nothing is computed for this call, which is
    what ``cached`` reports.

    The job belongs to its tenant, which it carries to the workers with the scope of the tiles
    they cache (ntk.core.job.Owned, ntk.api.tenants). Redis decides which job that is
    (ntk.core.jobstate.SUBMIT), in one script, and refuses a new one beyond the tenant's active
    jobs; should its reply be lost and the script run again (ntk.api.deps.redis_client), the job
    it created is found by its id.
    """
    state = request.app.state
    limit = state.settings.tenant_max_active_jobs
    script_keys, args = submit_call(job_id, submitted, key, request.state.request_id, inline, limit,
                                    estimated.fields())
    owner, how = await state.submit(keys=script_keys, args=args)
    if how == b"refused":
        raise over_active_jobs(owner, limit)
    owner = owner.decode()
    if owner != job_id:
        if how == b"answered":
            state.metrics.answer_cache_hits.inc()
        return owner, True
    try:
        await run_in_threadpool(lambda: enqueue(state.broker, PLAN, job_id, lane=estimated.lane))  # blocking client
    except redis.RedisError as e:
        await abandon(request, job_id, key, redis_problem(e))
        raise
    return job_id, False


async def abandon(request: Request, job_id: str, request_key: str, error: dict) -> None:
    """End a job that could not be queued, so that identical requests make a new one rather than
    join it. Should Redis not take even that, the workers' watchdog re-plans the job later."""
    script_keys, args = end_call(job_id, request_key, "failed", request.app.state.settings.job_ttl_s, error=error)
    try:
        await request.app.state.end(keys=script_keys, args=args)
    except redis.RedisError:
        pass


async def read(r, job_id: str, *, with_result: bool = False) -> dict | None:
    """The job, with its tiles done; ``with_result``: and the value at its result key, if any, as
    ``job[RESULT]`` (bytes, or a manifest), read in the same round trip."""
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.job(job_id))
    pipe.scard(keys.job_tiles_done(job_id))
    if with_result:
        pipe.get(keys.job_result(job_id))
    fields, done, *result = await pipe.execute()
    if not fields:
        return None
    job = {k.decode(): v.decode() for k, v in fields.items()}
    job["done"] = done
    if result and result[0] is not None:
        job[RESULT] = result[0]
    return job


# The job's field that holds its result's stored value, when it was read with the job (``read``,
# ``answered``): never a field of the job's hash, whose fields are text.
RESULT = "result:value"

# A request whose answer is kept (keys.answer) is answered from it in one round trip: the job that
# answered it and that job's result. KEYS: the request's answer key. ARGV: the job key prefix, the
# result key suffix. Answers {job hash (flat), result value} or nil when either is gone.
ANSWERED = """
local id = redis.call('GET', KEYS[1])
if not id then return nil end
local result = redis.call('GET', ARGV[1] .. id .. ARGV[2])
if not result then return nil end
local job = redis.call('HGETALL', ARGV[1] .. id)
if #job == 0 then return nil end
return {job, result}
"""


# ANSWERED's ARGV: a job's key is JOB_PREFIX + id, its result's JOB_PREFIX + id + RESULT_SUFFIX.
JOB_PREFIX = keys.job("")
RESULT_SUFFIX = keys.job_result("").removeprefix(JOB_PREFIX)


async def answered(request: Request, key: str) -> dict | None:
    """The ended job that answered an identical request (``key``: its request_key), with its
    result's value (``RESULT``), when both are still kept: a repeated request is answered from it
    before any estimate or submission (ntk.core.jobstate.SUBMIT looks again, for a job that ends
    meanwhile)."""
    found = await request.app.state.answered(keys=[keys.answer(key)], args=[JOB_PREFIX, RESULT_SUFFIX])
    if not found:
        return None
    flat, result = found
    return {**job_fields(flat), RESULT: result}


class Endings:
    """The ends of jobs, as END announces them on keys.JOBS_ENDED, for the requests waiting on
    them (``wait_for``): one subscription per API process, on a connection of its own (a
    subscribed connection takes no other command, so it is never one of the shared pool's), and
    an event per waiter. Should the subscription break (Redis restarted), every waiter is woken
    to read its job again, and the subscription is made anew."""

    RECONNECT_S = 1.0
    LISTEN_S = 1.0  # one read of the subscription, well under the client's NTK_REDIS_TIMEOUT_S

    def __init__(self, client):
        self.client = client
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self.subscribed = asyncio.Event()  # set while subscribed, once the waiters before it were woken

    async def listen(self) -> None:
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(keys.JOBS_ENDED)
                    self.wake_all()  # jobs may have ended while nobody listened
                    self.subscribed.set()
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.LISTEN_S)
                        if message is not None:
                            for event in self.waiters.get(message["data"].decode(), ()):
                                event.set()
            except (redis.RedisError, OSError) as e:
                self.subscribed.clear()
                log.warning("the subscription to ended jobs broke (%s); subscribing again", type(e).__name__)
                self.wake_all()
                await asyncio.sleep(self.RECONNECT_S)

    def wake_all(self) -> None:
        for events in self.waiters.values():
            for event in events:
                event.set()

    @contextmanager
    def watching(self, job_id: str):
        """An event set when the job ends (or may have: ``wake_all``), from now on."""
        event = asyncio.Event()
        self.waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            events = self.waiters[job_id]
            events.discard(event)
            if not events:
                del self.waiters[job_id]


def fraction_done(job: dict, done: int, total: int) -> float:
    """Tiles done, and the parts of the tiles in progress that their workers report
    (``partial:<worker>`` fields, ntk.worker.watch), over all tiles; 1 once the job succeeded."""
    if job["status"] == "succeeded":
        return 1.0
    if not total:
        return 0.0
    partial = sum(float(v) for k, v in job.items() if k.startswith(PARTIAL))
    return min(1.0, (done + partial) / total)


def remaining_s(job: dict, progress: float) -> float | None:
    """Seconds until the job ends: its estimate's unfinished part until a tenth of it is done,
    then the pace it has kept since it started; None once it ended or without an estimate."""
    if job["status"] in TERMINAL or "estimate_s" not in job:
        return None if job["status"] != "succeeded" else 0.0
    estimate = float(job["estimate_s"])
    if progress < 0.1 or not job.get("started_at"):
        return estimate * (1 - progress)
    elapsed = time.time() - float(job["started_at"])
    return elapsed * (1 - progress) / progress


# A waiter reads its job again this often at least, whatever it hears: the last word should an
# announcement be lost with a connection (``Endings``).
RECHECK_S = 1.0


async def wait_for(r, ended: asyncio.Event, job_id: str, seconds: float, *, queued: bool = False,
                   with_result: bool = False) -> dict:
    """The job once it ends, or as it is after ``seconds``: read when ``ended`` (``Endings.watching``,
    set up before the job could end unseen) says it ended, and at least every RECHECK_S. ``queued``:
    the caller knows the job was still queued when ``ended`` was set up (it made the job), so the
    first read waits for the event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if queued:
            try:
                await asyncio.wait_for(ended.wait(), max(0.0, min(deadline - loop.time(), RECHECK_S)))
            except TimeoutError:
                pass
            ended.clear()
        queued = True
        job = await read(r, job_id, with_result=with_result)
        if job is None or job["status"] in TERMINAL or loop.time() >= deadline:
            return job


def _time(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromtimestamp(float(value), timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(job: dict) -> dict:
    total = int(job.get("total", 0))
    done = total if job["status"] == "succeeded" else min(int(job.get("done", 0)), total)
    fraction = fraction_done(job, done, total)
    eta = remaining_s(job, fraction)
    return {"id": job["id"], "kind": job["kind"], "status": job["status"],
            "progress": {"done": done, "total": total, "fraction": round(fraction, 4)},
            "estimate_s": float(job["estimate_s"]) if "estimate_s" in job else None,
            "eta_s": None if eta is None else round(eta, 3), "lane": job.get("lane"),
            "created_at": _time(job.get("created_at")), "started_at": _time(job.get("started_at")),
            "finished_at": _time(job.get("finished_at")),
            "error": json.loads(job["error"]) if job.get("error") else None}


def not_found(job_id: str) -> Problem:
    return Problem(404, "Not found", f"no job {job_id} (finished jobs are kept for NTK_JOB_TTL_S)")


async def conclude(request: Request, job: dict, *, joined: bool) -> Response:
    """What a POST or GET .../result answers for a job: its answer, its problem, or 202/409."""
    if job["status"] == "succeeded":
        return await answer(request, job, cached=joined)
    if job["status"] == "failed":
        return respond(json.loads(job["error"]))
    if job["status"] == "cancelled":
        raise Problem(409, "Job cancelled", f"job {job['id']} was cancelled before it finished")
    return JSONResponse({"job": render(job)}, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


async def answer(request: Request, job: dict, *, cached: bool) -> Response:
    """The job's result: arrays as JSON or npz; a sweep's table as JSON or CSV."""
    r = request.app.state.redis
    result = keys.job_result(job["id"])
    meta = json.loads(job["answer"])
    meta["cached"] = meta["cached"] or cached
    sweep = job["kind"] == "sweep"
    if not sweep and wants(request, NPZ):
        return await stream_npz(r, result, meta, job["id"])
    value = job.get(RESULT)
    if value is not None and not value.startswith(MANIFEST_MAGIC):  # read with the job: the bytes themselves
        data = value
    else:
        located = await parts(r, result)
        data = None if located is None else await read_spans(r, result, spans(located, 0, size_of(located), 1 << 62))
    if data is None:
        raise expired(job["id"])
    if sweep:
        return await off_loop(request, encode_table, data, meta, wants(request, CSV), size=len(data))
    arrays = request.app.state.encoded.get(job["id"]) if len(data) < ON_LOOP_BYTES else None
    if arrays is None:
        arrays = await off_loop(request, arrays_json, data, size=len(data))
        if len(data) < ON_LOOP_BYTES:
            request.app.state.encoded.put(job["id"], arrays)
    return json_answer(meta, arrays)


async def parts(r, key: str) -> list[tuple[str, int]] | None:
    """Where the bytes of the value stored at ``key`` lie, in order, as (key, length): the key
    itself, or the chunks its manifest lists (ntk.core.keys: "Values in chunks"). None: gone."""
    pipe = r.pipeline(transaction=True)
    pipe.strlen(key)
    pipe.getrange(key, 0, len(MANIFEST_MAGIC) - 1)
    size, head = await pipe.execute()
    if not size:
        return None
    if head != MANIFEST_MAGIC:
        return [(key, size)]
    manifest = Manifest.decode(await r.get(key) or b"")
    return None if manifest is None else [(keys.chunk(digest), length) for digest, length in manifest.chunks]


def size_of(located: list[tuple[str, int]]) -> int:
    return sum(length for _, length in located)


async def read_spans(r, key: str, ranges: list[tuple[str, int, int]]) -> bytes | None:
    """The bytes of ``ranges`` (codec.spans) of the value at ``key``, read in one round trip; None
    when a chunk was evicted: the value is gone, and so goes its manifest, so that the next
    identical request computes it again rather than finding the answer cached."""
    pipe = r.pipeline(transaction=False)
    for part, first, last in ranges:
        pipe.getrange(part, first, last)
    pieces = await pipe.execute()
    if any(len(piece) != last - first + 1 for piece, (_, first, last) in zip(pieces, ranges)):
        await r.delete(key)
        return None
    return b"".join(pieces)


def expired(job_id: str) -> Problem:
    return Problem(410, "Result expired", f"the result of job {job_id} was evicted or expired: send the "
                   "request again (cached tiles make that cheap)")


def compact_json(value) -> bytes:
    """JSON as JSONResponse writes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def arrays_json(data: bytes) -> bytes:
    """The arrays of an npz as one JSON object, name -> nested lists."""
    return compact_json({name: a.tolist() for name, a in unpack(data).items()})


def json_answer(meta: dict, arrays: bytes) -> Response:
    """One JSON object of ``meta``'s members, then the arrays' (``arrays_json``)."""
    head = compact_json(meta)
    body = head if arrays == b"{}" else head[:-1] + b"," + arrays[1:]
    return Response(body, media_type="application/json")


class EncodedArrays:
    """The JSON of small results' arrays (``arrays_json``), by job id, in this API process, the
    least recently used dropped past MAX_BYTES: a job's result never changes once stored, so an
    answer repeated from the cache skips reading the npz and writing its numbers out again (the
    most of its time: ~0.6 ms for two 20 × 20 kernels, of ~3)."""

    MAX_BYTES = 16 << 20

    def __init__(self):
        self.held: OrderedDict[str, bytes] = OrderedDict()
        self.bytes = 0

    def get(self, job_id: str) -> bytes | None:
        if job_id in self.held:
            self.held.move_to_end(job_id)
        return self.held.get(job_id)

    def put(self, job_id: str, arrays: bytes) -> None:
        if job_id not in self.held:
            self.held[job_id] = arrays
            self.bytes += len(arrays)
        while self.bytes > self.MAX_BYTES:
            _, dropped = self.held.popitem(last=False)
            self.bytes -= len(dropped)


def encode_table(data: bytes, meta: dict, as_csv: bool) -> Response:
    document = table.from_arrays(unpack(data))
    if as_csv:
        return Response(table.to_csv(document["columns"], document["rows"]), media_type=CSV)
    return JSONResponse({**document, **meta})


STREAM_CHUNK_BYTES = 4 << 20


async def stream_npz(r, result: str, meta: dict, job_id: str) -> Response:
    """The stored npz with ``meta`` added, sent as it is read: Redis hands it over in ranges of its
    key or of its chunks, the next one read while the last is sent, so a large kernel is never held
    whole in the API and Redis's reading overlaps the network's sending."""
    located = await parts(r, result)
    size = 0 if located is None else size_of(located)
    tail = None if located is None else await read_spans(r, result, spans(located, max(0, size - TAIL_BYTES),
                                                                           size, TAIL_BYTES))
    if tail is None:
        raise expired(job_id)
    scalars = {name: np.asarray(times_as_floats(value) if name == "t" else value)
               for name, value in meta.items() if value is not None}
    kept, suffix = appended(size, tail, **scalars)
    ranges = spans(located, 0, kept, STREAM_CHUNK_BYTES)

    async def body():
        reading = asyncio.ensure_future(r.getrange(*ranges[0]))
        try:
            for i, (_, first, last) in enumerate(ranges):
                chunk = await reading
                if i + 1 < len(ranges):
                    reading = asyncio.ensure_future(r.getrange(*ranges[i + 1]))
                if len(chunk) != last - first + 1:  # evicted mid-answer: the short body tells the client
                    await r.delete(result)
                    raise RuntimeError(f"the result of job {job_id} was evicted while it was being sent")
                yield chunk
            yield suffix
        finally:
            reading.cancel()

    return StreamingResponse(body(), media_type=NPZ, headers={"Content-Length": str(kept + len(suffix))})


async def cancel(request: Request, job: dict) -> None:
    script_keys, args = end_call(job["id"], job["request_key"], "cancelled", request.app.state.settings.job_ttl_s)
    await request.app.state.end(keys=script_keys, args=args)



async def compute(request: Request, submitted: AnyJob, inline: dict[str, bytes], wait: float, path: str) -> Response:
    """The answer an identical request left, if it is kept (``answered``: before any estimate);
    else admit (``path``: the input an estimate's refusal names), submit, wait up to ``wait``
    seconds, answer 200 (or the job's problem) or 202 with the job."""
    state = request.app.state
    with_result = not wants(request, NPZ)  # JSON: the result's value comes with the job's last read
    key = request_key(submitted)
    job = await answered(request, key) if with_result else None
    if job is not None:
        logs.job_id.set(job["id"])  # until the request ends (ntk.api.middleware.RequestContext)
        state.metrics.answer_cache_hits.inc()
        return await conclude(request, job, joined=True)
    estimated = await admit(request, submitted, path)
    new_id = uuid.uuid4().hex
    with state.endings.watching(new_id) as ended:  # before the job exists: its end cannot go unheard
        job_id, joined = await submit(request, submitted, key, inline, estimated, new_id)
        logs.job_id.set(job_id)
        if joined:
            with state.endings.watching(job_id) as joined_ended:
                job = await wait_for(state.redis, joined_ended, job_id, wait, with_result=with_result)
        else:
            job = await wait_for(state.redis, ended, job_id, wait, queued=True, with_result=with_result)
    if job is None:  # its keys expired between submit and now: only with absurdly small TTLs
        raise Problem(503, "Job lost", f"job {job_id} vanished from Redis; send the request again")
    return await conclude(request, job, joined=joined)
