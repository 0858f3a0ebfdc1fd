"""A request's body and ArrayRefs, resolved to the references a job carries (see ntk.worker.plan).

The JSON body is parsed off the event loop (OffLoopJson); dataset references are looked up (their
metadata holds each array's own content hash); inline arrays are parsed off the event loop too,
checked, hashed, and kept to be stored with the job.

Off the event loop means in a thread, through one limiter of NTK_PARSE_CONCURRENCY threads (one per
core by default) for all of this CPU work: sixteen large bodies at once queue for the cores instead
of each taking a thread that holds the interpreter lock, which would starve the event loop, and with
it every Redis reply (a late one times out) and every health probe.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import anyio
from fastapi import Request
from fastapi.routing import APIRoute

from ntk.api.arrays import HEX_ID, check_points, check_targets, content_hash, from_json
from ntk.api.problems import Problem, invalid
from ntk.api.schemas import DatasetRef
from ntk.core import keys
from ntk.core.codec import pack_array
from ntk.spec.architecture import Architecture, SpecError


def inline_array(value, path: str, role: str) -> tuple[str, list[int], bytes]:
    """Parse, check, hash and serialize an inline array (CPU work: run off the event loop)."""
    a = from_json(value, path)
    return content_hash(**{role: a}), list(a.shape), pack_array(a)


# Work on fewer bytes than this is done on the event loop: parsing or encoding 64 kB of JSON takes
# about as long as handing the work to a thread and back (~0.1-0.3 ms on a loaded core), and the
# small requests it serves are those whose answer is a few milliseconds.
ON_LOOP_BYTES = 64 << 10


async def off_loop(request: Request, work: Callable, *args, size: int | None = None) -> Any:
    """``work(*args)`` in a thread, at most NTK_PARSE_CONCURRENCY such threads at once (ntk.api.app);
    on the loop when it handles ``size`` bytes, fewer than ON_LOOP_BYTES."""
    if size is not None and size < ON_LOOP_BYTES:
        return work(*args)
    return await anyio.to_thread.run_sync(work, *args, limiter=request.app.state.cpu_slots)


class OffLoopJsonRequest(Request):
    """A request whose JSON body is parsed off the event loop (starlette parses it on the loop)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await off_loop(self, json.loads, body, size=len(body))
        return self._json


class OffLoopJson(APIRoute):
    """Route class of the calls that take large JSON bodies: FastAPI reads their body through
    OffLoopJsonRequest. (A body over NTK_MAX_JSON_BYTES never gets here: ntk.api.middleware.BodyLimit.)"""

    def get_route_handler(self) -> Callable:
        handle = super().get_route_handler()

        async def handle_off_loop(request: Request):
            request = OffLoopJsonRequest(request.scope, request.receive)
            await request.body()  # read here, where a client gone mid-body is a ClientDisconnect (499), not a 400
            return await handle(request)

        return handle_off_loop


class Inputs:
    def __init__(self, request: Request):
        self.request = request
        self.redis = request.app.state.redis
        self.tenant = request.state.tenant  # whose datasets a reference names (an admin's too: its own)
        self.inline: dict[str, bytes] = {}  # digest -> npy bytes, stored with the job

    async def points(self, ref, path: str) -> dict:
        doc = await self._resolve(ref, path, "x")
        check_points(doc["shape"], path)
        return doc

    async def targets(self, ref, path: str, n: int) -> dict:
        doc = await self._resolve(ref, path, "y")
        check_targets(doc["shape"], n, path)
        return doc

    async def _resolve(self, ref, path: str, role: str) -> dict:
        if isinstance(ref, DatasetRef):
            return await self._dataset(ref, path)
        digest, shape, data = await off_loop(self.request, inline_array, ref, path, role,
                                             size=len(await self.request.body()))  # the array's JSON is in it
        self.inline[digest] = data
        return {"digest": digest, "shape": shape, "dataset": None, "field": role}

    async def _dataset(self, ref: DatasetRef, path: str) -> dict:
        if not HEX_ID.fullmatch(ref.dataset):
            raise invalid(f"{path}.dataset", "not a dataset id (a content hash: 64 lowercase hex digits)")
        meta = await self.redis.hget(keys.dataset(self.tenant.id, ref.dataset), "meta")
        if meta is None:
            raise invalid(f"{path}.dataset", f"no dataset {ref.dataset}: upload it first")
        meta = json.loads(meta)
        if meta[f"{ref.field}_shape"] is None:
            raise invalid(f"{path}.field", f"dataset {ref.dataset} has no {ref.field}")
        return {"digest": meta["digests"][ref.field], "shape": meta[f"{ref.field}_shape"],
                "dataset": ref.dataset, "field": ref.field}


def same_features(a: dict, b: dict, path: str, other: str) -> None:
    if a["shape"][1:] != b["shape"][1:]:
        raise invalid(path, f"points have shape {a['shape'][1:]} but {other} points have {b['shape'][1:]}")


def fits(architecture: Architecture, point_shape: list[int]) -> dict:
    """The architecture's canonical form, once it is known to run on points of this shape."""
    try:
        architecture.check(tuple(point_shape))
    except SpecError as e:
        errors = [{"path": f"architecture.{error['path']}", "message": error["message"]} for error in e.errors]
        raise Problem(422, "Invalid architecture", "; ".join(f"{x['path']}: {x['message']}" for x in errors),
                      errors=errors) from None
    return json.loads(architecture.canonical_json())
