"""A request's ArrayRefs, resolved to the references a job carries (see workers.plan).

Dataset references are looked up (their metadata holds each array's own content hash); inline
arrays are parsed off the event loop, checked, hashed, and kept to be stored with the job.
"""

from __future__ import annotations

import json

from fastapi.concurrency import run_in_threadpool

from service.arrays import HEX_ID, check_points, check_targets, content_hash, from_json
from service.problems import Problem, invalid
from service.schemas import DatasetRef
from workers import keys
from workers.codec import pack_array
from workers.engine.spec import Architecture, SpecError


def inline_array(value, path: str, role: str) -> tuple[str, list[int], bytes]:
    """Parse, check, hash and serialize an inline array (CPU work: run off the event loop)."""
    a = from_json(value, path)
    return content_hash(**{role: a}), list(a.shape), pack_array(a)


class Inputs:
    def __init__(self, redis):
        self.redis = redis
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
        digest, shape, data = await run_in_threadpool(inline_array, ref, path, role)
        self.inline[digest] = data
        return {"digest": digest, "shape": shape, "dataset": None, "field": role}

    async def _dataset(self, ref: DatasetRef, path: str) -> dict:
        if not HEX_ID.fullmatch(ref.dataset):
            raise invalid(f"{path}.dataset", "not a dataset id (a content hash: 64 lowercase hex digits)")
        meta = await self.redis.hget(keys.dataset(ref.dataset), "meta")
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
