"""/v1/datasets: arrays uploaded once (JSON, npy or npz) and referenced by their content hash.

Stored without a TTL, so ``volatile-lru`` never evicts them; they live until deleted. Each tenant
has its own (ntk.api.tenants): the same content uploaded by two tenants is stored twice, counted
against each one's NTK_TENANT_MAX_BYTES, and deleting one leaves the other.
"""

from __future__ import annotations

import json

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from ntk.api import deps, limits
from ntk.api.arrays import HEX_ID, check_points, check_targets, checked, content_hash, from_json, from_npy, from_npz
from ntk.api.inputs import off_loop
from ntk.api.problems import Problem, invalid, malformed_json, problem_responses
from ntk.api.schemas import Dataset
from ntk.api.tenants import Tenant, over_storage_quota
from ntk.core import keys
from ntk.core.codec import pack_array

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], dependencies=[Depends(deps.authorize)])

BODIES = {
    "application/json": {"schema": {"type": "object", "required": ["x"],
                                    "properties": {"x": {"type": "array"}, "y": {"type": "array"}}},
                         "example": {"x": [[0.1, 0.2], [0.3, -0.4]], "y": [1.0, 0.0]}},
    "application/x-npy": {"schema": {"type": "string", "format": "binary", "description": "the array x"}},
    "application/x-npz": {"schema": {"type": "string", "format": "binary", "description": "arrays x and y (optional)"}},
}


def parse(body: bytes, content_type: str, max_bytes: int) -> dict[str, np.ndarray | None]:
    """x and y from a body; JSON arrays become float64, binary ones keep their dtype (at most
    ``max_bytes`` of them once an npz is decompressed)."""
    if content_type == "application/json":
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise malformed_json(e) from None
        if not isinstance(document, dict) or document.get("x") is None:
            raise invalid("x", 'the body must be an object {"x": [...], "y": [...]}')
        unknown = set(document) - {"x", "y"}
        if unknown:
            raise invalid(sorted(unknown)[0], "unknown field: a dataset holds x and y only")
        arrays = {name: from_json(document[name], name) if document.get(name) is not None else None
                  for name in ("x", "y")}
    elif content_type == "application/x-npy":
        arrays = {"x": checked(from_npy(body, max_bytes), "x"), "y": None}
    elif content_type == "application/x-npz":
        found = from_npz(body, max_bytes)
        unknown = set(found) - {"x", "y"}
        if "x" not in found or unknown:
            raise invalid(sorted(unknown)[0] if unknown else "x", "an npz dataset holds arrays x and (optional) y only")
        arrays = {name: checked(found[name], name) if name in found else None for name in ("x", "y")}
    else:
        raise Problem(415, "Unsupported media type", f"a dataset is application/json, application/x-npy or "
                      f"application/x-npz, not {content_type or 'an untyped body'}")
    check_points(arrays["x"].shape, "x")
    if arrays["y"] is not None:
        check_targets(arrays["y"].shape, arrays["x"].shape[0], "y")
    return arrays


def metadata(x: np.ndarray, y: np.ndarray | None) -> dict:
    return {"id": content_hash(x=x, y=y), "x_shape": list(x.shape), "y_shape": None if y is None else list(y.shape),
            "dtype": x.dtype.name, "bytes": x.nbytes + (0 if y is None else y.nbytes),
            "digests": {"x": content_hash(x=x), "y": None if y is None else content_hash(y=y)}}


def prepare(body: bytes, content_type: str, settings) -> tuple[dict, dict[str, bytes]]:
    """A dataset's metadata and its arrays as stored, from a body: CPU work, done in one thread."""
    arrays = parse(body, content_type, settings.max_body_bytes)
    limits.check_point_counts(settings, list(arrays["x"].shape), "x")
    return metadata(arrays["x"], arrays["y"]), {name: pack_array(a) for name, a in arrays.items() if a is not None}


def public(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "digests"}


@router.post("", status_code=201, response_model=Dataset, openapi_extra={"requestBody": {"content": BODIES, "required": True}},
             responses={200: {"model": Dataset, "description": "the dataset existed"},
                        **problem_responses(400, 401, 413, 415, 422, 503)})
async def upload(request: Request, settings: deps.SettingsDep, tenant: deps.TenantDep):
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    body = await request.body()
    meta, stored = await off_loop(request, prepare, body, content_type, settings)
    fields = [item for field_and_value in {**stored, "meta": json.dumps(meta)}.items() for item in field_and_value]
    limit = settings.tenant_max_bytes
    held, how = await request.app.state.store_dataset(keys=[keys.dataset(tenant.id, meta["id"]), keys.STORED_BYTES],
                                                      args=[tenant.id, meta["bytes"], limit, *fields])
    if how == b"refused":
        raise over_storage_quota(held, meta["bytes"], limit)
    if how == b"existed":
        return JSONResponse(public(meta), status_code=200)
    return JSONResponse(public(meta), status_code=201, headers={"Location": f"/v1/datasets/{meta['id']}"})


def not_found(dataset_id: str) -> Problem:
    return Problem(404, "Not found", f"no dataset {dataset_id}")


async def holders(redis, tenant: Tenant, dataset_id: str) -> list[str]:
    """The tenants holding a dataset ``dataset_id`` that ``tenant`` may see (itself, or for an admin
    any tenant: those holding datasets are the fields of keys.STORED_BYTES); a 404 when none does."""
    if not HEX_ID.fullmatch(dataset_id):
        candidates = []
    elif tenant.admin:
        candidates = [owner.decode() for owner in await redis.hkeys(keys.STORED_BYTES)]
    else:
        candidates = [tenant.id]
    pipe = redis.pipeline(transaction=False)
    for owner in candidates:
        pipe.exists(keys.dataset(owner, dataset_id))
    found = [owner for owner, exists in zip(candidates, await pipe.execute()) if exists]
    if not found:
        raise not_found(dataset_id)
    return found


@router.get("/{dataset_id}", response_model=Dataset, responses=problem_responses(401, 404, 422, 503))
async def get_dataset(dataset_id: str, r: deps.RedisDep, tenant: deps.TenantDep):
    owner, *_ = await holders(r, tenant, dataset_id)
    meta = await r.hget(keys.dataset(owner, dataset_id), "meta")
    if meta is None:  # deleted since
        raise not_found(dataset_id)
    return public(json.loads(meta))


@router.delete("/{dataset_id}", status_code=204, responses=problem_responses(401, 404, 422, 503))
async def delete_dataset(dataset_id: str, request: Request, r: deps.RedisDep, tenant: deps.TenantDep):
    # Deleting releases the dataset's bytes from its tenant's quota; an admin deletes every tenant's copy.
    for owner in await holders(r, tenant, dataset_id):
        await request.app.state.delete_dataset(keys=[keys.dataset(owner, dataset_id), keys.STORED_BYTES], args=[owner])
    return Response(status_code=204)
