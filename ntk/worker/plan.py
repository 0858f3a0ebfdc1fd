"""What a job computes: its Gram-matrix blocks, their identities, and the tiles that cover them.

A block's identity hashes the canonical architecture, the digests of its two inputs, the dtype,
(Monte Carlo) the sampling and the job's cache scope (its tenant, or "shared" with
NTK_SHARED_CACHE: ntk.api.tenants), and NOT which kernels were asked for: tiles always hold both
NNGP and NTK, so a tile computed for one request serves every later one on the same data in the
same scope (one tenant's, or everyone's when shared).
"""

from __future__ import annotations

from dataclasses import dataclass

from ntk.core.job import ArrayRef, KernelJob, PredictJob, digest_of
from ntk.engine.kernel import Tile, tiles


@dataclass(frozen=True)
class Block:
    """K(x1, x2) for one pair of inputs; x2 None is K(x1, x1), of which only the upper triangle is computed."""

    name: str
    id: str
    x1: ArrayRef
    x2: ArrayRef | None
    method: str = "analytic"
    samples: int | None = None
    seed: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        n1 = self.x1.shape[0]
        return n1, n1 if self.x2 is None else self.x2.shape[0]

    def tiles(self, size: int) -> list[Tile]:
        n1, n2 = self.shape
        if self.method == "monte_carlo":
            size = max(n1, n2)  # one sample of random networks must serve the whole matrix
        return list(tiles(n1, None if self.x2 is None else n2, size))


def block(request: KernelJob | PredictJob, name: str, x1: ArrayRef, x2: ArrayRef | None) -> Block:
    if x2 is not None and x2.digest == x1.digest:
        x2 = None
    method = request.method if request.kind == "kernels" else "analytic"
    sampling = {"samples": request.samples, "seed": request.seed} if method == "monte_carlo" else {}
    identity = digest_of({
        "architecture": request.architecture, "dtype": request.dtype, "method": method, **sampling,
        "x1": x1.digest, "x2": None if x2 is None else x2.digest, "cache_scope": request.cache_scope,
    })
    return Block(name, identity, x1, x2, method, **sampling)


def blocks(request: KernelJob | PredictJob) -> dict[str, Block]:
    """The Gram blocks a request needs, by name."""
    if request.kind == "kernels":
        return {"kernel": block(request, "kernel", request.x1, request.x2)}
    out = {
        "train_train": block(request, "train_train", request.x_train, None),
        "test_train": block(request, "test_train", request.x_test, request.x_train),
    }
    if request.compute_cov:
        out["test_test"] = block(request, "test_test", request.x_test, None)
    return out
