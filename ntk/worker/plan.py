"""What a job computes: its Gram-matrix blocks, their identities, and the tiles that cover them.

A job's request is a JSON document the API builds (``kind`` "kernels" or "predict"); arrays in it
are references ``{"digest", "shape", "dataset", "field"}``: ``digest`` hashes the array's dtype,
shape and bytes, ``dataset`` names the stored dataset holding it (None: the array came inline and
lives in the job's inputs under its digest).

A request also names its ``tenant`` (who owns the job and the datasets it reads) and its
``cache_scope``: the tenant, or "shared" with NTK_SHARED_CACHE (ntk.api.tenants).

A block's identity hashes the canonical architecture, the digests of its two inputs, the dtype,
(Monte Carlo) the sampling and the cache scope, and NOT which kernels were asked for: tiles always
hold both NNGP and NTK, so a tile computed for one request serves every later one on the same data
in the same scope (one tenant's, or everyone's when shared).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ntk.engine import tiles

Tile = tuple[int, int, int, int]


def digest_of(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Block:
    """K(x1, x2) for one pair of inputs; x2 None is K(x1, x1), of which only the upper triangle is computed."""

    name: str
    id: str
    x1: dict
    x2: dict | None
    method: str = "analytic"
    samples: int | None = None
    seed: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        n1 = self.x1["shape"][0]
        return n1, n1 if self.x2 is None else self.x2["shape"][0]

    def tiles(self, size: int) -> list[Tile]:
        n1, n2 = self.shape
        if self.method == "monte_carlo":
            size = max(n1, n2)  # one sample of random networks must serve the whole matrix
        return list(tiles(n1, None if self.x2 is None else n2, size))


def block(request: dict, name: str, x1: dict, x2: dict | None) -> Block:
    if x2 is not None and x2["digest"] == x1["digest"]:
        x2 = None
    method = request.get("method", "analytic")
    sampling = {"samples": request.get("samples"), "seed": request.get("seed")} if method == "monte_carlo" else {}
    identity = digest_of({
        "architecture": request["architecture"], "dtype": request["dtype"], "method": method, **sampling,
        "x1": x1["digest"], "x2": None if x2 is None else x2["digest"], "cache_scope": request["cache_scope"],
    })
    return Block(name, identity, x1, x2, method, **sampling)


def blocks(request: dict) -> dict[str, Block]:
    """The Gram blocks a request needs, by name."""
    if request["kind"] == "kernels":
        return {"kernel": block(request, "kernel", request["x1"], request.get("x2"))}
    out = {
        "train_train": block(request, "train_train", request["x_train"], None),
        "test_train": block(request, "test_train", request["x_test"], request["x_train"]),
    }
    if request["compute_cov"]:
        out["test_test"] = block(request, "test_test", request["x_test"], None)
    return out


def request_key(request: dict) -> str:
    """Identical requests (same numbers asked of the same data by the same tenant) have the same
    key, however their arrays travelled (inline or as a dataset); the tenant is part of the request."""
    def strip(value):
        if isinstance(value, dict) and "digest" in value:
            return value["digest"]
        return value
    return digest_of({name: strip(value) for name, value in request.items()})
