"""What the workers read and write in Redis: inputs, tiles, factorizations, progress.

Tiles, factorizations and results are values that may be stored in chunks (ntk.core.keys: "Values
in chunks"): ``put`` serializes arrays straight into chunks and ``get`` reads them back through a
file that fetches chunks as numpy reads it, so neither holds the value's bytes whole next to its
arrays: a 1.15 GB factorization costs the worker 1.15 GB plus a few chunks, not twice that.
A train kernel's factorization is stored as the arrays ``factorization_arrays`` makes, under the
key ``factorization_key`` names.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import redis
import torch

from ntk.core import keys
from ntk.core.broker import FINISH, enqueue
from ntk.core.codec import Manifest, chunk_digest, unpack, unpack_array
from ntk.core.job import ArrayRef
from ntk.engine.predict import Factorization, PredictError, dynamics_kernel


class MissingInput(LookupError):
    """An array a job reads is gone (its dataset was deleted while the job ran)."""


class ValueGone(LookupError):
    """A chunk of a value was evicted (or expired): the value is gone as a whole."""


PIPELINED_CHUNKS = 8  # chunks per round trip: 32 MB in flight at the default chunk size


class ChunkWriter(io.RawIOBase):
    """A write-only file whose bytes go to Redis as chunks of ``chunk_bytes``, ``PIPELINED_CHUNKS``
    per round trip, while it is written (np.savez writes an npz to it without seeking: zipfile
    then puts each member's sizes after its data). ``close_value`` sends the rest and answers what
    the value's own key must hold: the bytes themselves when they fit one chunk, else the manifest."""

    def __init__(self, client: redis.Redis, chunk_bytes: int, ttl: int | None):
        self.redis, self.chunk_bytes, self.ttl = client, chunk_bytes, ttl
        self.pipe = client.pipeline(transaction=False)
        self.pending = 0
        self.chunks: list[tuple[str, int]] = []
        self.buffer = bytearray()
        self.position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def write(self, b) -> int:
        """Whole chunks of an immutable ``bytes`` (what numpy hands zipfile) go as slices of it,
        uncopied; the rest is gathered in ``buffer``."""
        data = memoryview(b).cast("B")
        n = len(data)
        self.position += n
        if self.buffer or not isinstance(b, bytes):
            take = min(n, self.chunk_bytes - len(self.buffer)) if isinstance(b, bytes) else n
            self.buffer += data[:take]
            data = data[take:]
            while len(self.buffer) >= self.chunk_bytes:
                self._send(bytes(self.buffer[:self.chunk_bytes]))
                del self.buffer[:self.chunk_bytes]
        while len(data) >= self.chunk_bytes:
            self._send(data[:self.chunk_bytes])
            data = data[self.chunk_bytes:]
        self.buffer += data
        return n

    def _send(self, chunk) -> None:
        digest = chunk_digest(chunk)
        self.pipe.set(keys.chunk(digest), chunk, ex=self.ttl)
        self.chunks.append((digest, len(chunk)))
        self.pending += 1
        if self.pending == PIPELINED_CHUNKS:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.pipe.execute()
            self.pending = 0

    def close_value(self) -> bytes:
        if not self.chunks:
            return bytes(self.buffer)
        if self.buffer:
            self._send(bytes(self.buffer))
        self._flush()
        return Manifest(tuple(self.chunks)).encode()


class ChunkReader(io.RawIOBase):
    """A read-only, seekable file over a value's chunks, fetched as it is read: sequential reads
    fetch ``PIPELINED_CHUNKS`` in one round trip, a jump (zipfile reading the directory at the end)
    fetches one. Raises ValueGone when a chunk is missing."""

    def __init__(self, client: redis.Redis, manifest: Manifest):
        self.redis, self.chunks = client, manifest.chunks
        self.starts = [0]
        for _, length in self.chunks:
            self.starts.append(self.starts[-1] + length)
        self.position = 0
        self.held: dict[int, bytes] = {}
        self.last_fetched = -2

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.starts[-1]}[whence]
        self.position = base + offset
        return self.position

    def read(self, size: int = -1) -> bytes:
        """At most ``size`` bytes, and never past the end of the chunk they start in: one copy
        (the slice), where RawIOBase's read would make two."""
        if self.position >= self.starts[-1]:
            return b""
        index = bisect.bisect_right(self.starts, self.position) - 1
        chunk = self._chunk(index)
        offset = self.position - self.starts[index]
        end = len(chunk) if size is None or size < 0 else min(len(chunk), offset + size)
        self.position += end - offset
        return chunk[offset:end]

    def readinto(self, b) -> int:
        data = self.read(len(b))
        memoryview(b)[:len(data)] = data
        return len(data)

    def read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = self.read(size - len(data))
            if not piece:
                raise ValueError("the value ends early")
            data += piece
        return data

    def read_into(self, target: memoryview) -> None:
        """Fill ``target`` from here on, straight from the chunks (one copy)."""
        done = 0
        while done < len(target):
            index = bisect.bisect_right(self.starts, self.position) - 1
            chunk = memoryview(self._chunk(index))
            offset = self.position - self.starts[index]
            n = min(len(target) - done, len(chunk) - offset)
            target[done:done + n] = chunk[offset:offset + n]
            done += n
            self.position += n

    def _chunk(self, index: int) -> bytes:
        if index not in self.held:
            count = PIPELINED_CHUNKS if index == self.last_fetched + 1 else 1
            wanted = range(index, min(index + count, len(self.chunks)))
            values = self.redis.mget([keys.chunk(self.chunks[i][0]) for i in wanted])
            if any(v is None for v in values):
                raise ValueGone("a chunk of the value was evicted")
            self.held = dict(zip(wanted, values))
            self.last_fetched = wanted[-1]
        return self.held[index]


NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npz(reader: "ChunkReader") -> dict[str, np.ndarray]:
    """The arrays of an uncompressed npz (codec.pack, np.savez), each copied once from the chunks
    into an array allocated for it: np.load would go through zipfile's reads and numpy's 256 kB
    loop, at a third of the speed (bench/chunk_throughput.py). Members are found through the zip's
    directory; a local header is 30 bytes, then the member's name and extra field, then the npy."""
    out = {}
    with zipfile.ZipFile(reader) as archive:
        for member in archive.infolist():
            reader.seek(member.header_offset)
            local = reader.read_exactly(30)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            reader.seek(member.header_offset + 30 + name_length + extra_length)
            shape, fortran, dtype = NPY_HEADERS[np.lib.format.read_magic(reader)](reader)
            array = np.empty(shape, dtype, order="F" if fortran else "C")
            reader.read_into(memoryview(array.reshape(-1, order="A")).cast("B"))
            out[member.filename.removesuffix(".npy")] = array
    return out


# -- factorizations: a train kernel's ntk.engine.predict.Factorization, as the store keeps it

FACTORIZATION_FORMAT = "ntk-service/predict-factorization/1"


def factorization_key(train_kernel_id: str, kernel: str, *, diag_reg: float, diag_reg_absolute_scale: bool,
                      method: str, compute_cov: bool = True, dtype: str = "float64") -> str:
    """Cache key (hex sha256) of the factorization ``factorize`` would build.

    Keyed by the train-train kernel's identity, the factorized matrix, whether the
    unregularized NNGP rides along (``"ntk"`` mode with covariance), ``diag_reg`` (exact
    float repr), its scale, the method and dtype.
    """
    ident = {
        "train_kernel": train_kernel_id,
        "matrix": dynamics_kernel(kernel),
        "with_nngp": kernel == "ntk" and bool(compute_cov),
        "diag_reg": float(diag_reg).hex(),
        "diag_reg_absolute_scale": bool(diag_reg_absolute_scale),
        "method": method,
        "dtype": dtype,
        "format": FACTORIZATION_FORMAT,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def factorization_arrays(fact: Factorization) -> dict[str, np.ndarray]:
    """The factorization as numpy arrays (``np.savez``-able without pickle)."""
    out = {
        "format": np.array(FACTORIZATION_FORMAT),
        "matrix": np.array(fact.matrix),
        "n": np.array(fact.n, dtype=np.int64),
        "diag_reg": np.array(fact.diag_reg, dtype=np.float64),
        "diag_reg_absolute_scale": np.array(bool(fact.diag_reg_absolute_scale)),
        "epsilon": np.array(fact.epsilon, dtype=np.float64),
    }
    for k, v in fact.tensors().items():
        out[k] = v.detach().cpu().numpy()
    return out


def factorization_from_arrays(d, device=None, dtype=None) -> Factorization:
    """Inverse of :func:`factorization_arrays` (accepts an ``np.load`` result too)."""
    fmt = str(np.asarray(d["format"]))
    if fmt != FACTORIZATION_FORMAT:
        raise PredictError(f"not a factorization of this format: {fmt!r} != {FACTORIZATION_FORMAT!r}")
    tensors = {}
    for k in ("cholesky", "evals", "evecs", "nngp_train_train"):
        if k in d:
            tensors[k] = torch.as_tensor(np.asarray(d[k]), device=device)
            if dtype is not None:
                tensors[k] = tensors[k].to(dtype)
    f = Factorization(
        matrix=str(np.asarray(d["matrix"])),
        n=int(np.asarray(d["n"])),
        diag_reg=float(np.asarray(d["diag_reg"])),
        diag_reg_absolute_scale=bool(np.asarray(d["diag_reg_absolute_scale"])),
        epsilon=float(np.asarray(d["epsilon"])),
        **tensors,
    )
    if f.matrix not in ("nngp", "ntk") or not f.methods:
        raise PredictError("malformed factorization arrays")
    return f


class Store:
    INPUTS_KEPT = 4  # arrays kept in memory: a job's tiles all read the same few (x_train, x_test, y)

    def __init__(self, client: redis.Redis, broker, cache_ttl_s: int, chunk_bytes: int = 4 << 20):
        self.redis = client
        self.broker = broker
        self.ttl = cache_ttl_s
        self.chunk_bytes = chunk_bytes
        self._inputs: OrderedDict[str, np.ndarray] = OrderedDict()

    # -- inputs: content-addressed, so a digest names one array forever and caching it is safe
    def array(self, job_id: str, ref: ArrayRef, tenant: str) -> np.ndarray:
        """An input array: from the job's inline inputs, or from ``tenant``'s dataset."""
        digest = ref.digest
        if digest in self._inputs:
            self._inputs.move_to_end(digest)
            return self._inputs[digest]
        if ref.dataset is None:
            data = self.redis.hget(keys.job_inputs(job_id), digest)
        else:
            data = self.redis.hget(keys.dataset(tenant, ref.dataset), ref.field)
        if data is None:
            where = f"dataset {ref.dataset}" if ref.dataset else "the job's inputs"
            raise MissingInput(f"{where} vanished while the job ran (deleted, or the job expired)")
        self._inputs[digest] = array = unpack_array(data)
        if len(self._inputs) > self.INPUTS_KEPT:
            self._inputs.popitem(last=False)
        return array

    # -- values that may be chunked: tiles, factorizations, results
    def put(self, key: str, ttl: int | None = None, **arrays: np.ndarray) -> None:
        """Store ``arrays`` as an npz at ``key``, in chunks when large, with the cache TTL unless
        ``ttl`` is given. Idempotent: a tile's key names its content, so a re-run task writes the
        same value (and chunks named by their content)."""
        self.redis.set(key, self.value(ttl, **arrays), ex=ttl or self.ttl)

    def value(self, ttl: int | None = None, **arrays: np.ndarray) -> bytes:
        """What the key of ``arrays`` stored as a value must hold (``put``): the npz's bytes, or the
        manifest of its chunks, which are in Redis (with the cache TTL unless ``ttl`` is given) by
        the time this answers; for a caller that sets the key in a pipeline of its own."""
        writer = ChunkWriter(self.redis, self.chunk_bytes, ttl or self.ttl)
        np.savez(writer, **arrays)
        return writer.close_value()

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored at ``key``; None when it, or any of its chunks, is gone."""
        return self.decoded(key, self.redis.get(key))

    def decoded(self, key: str, data: bytes | None) -> dict[str, np.ndarray] | None:
        """The arrays of ``data``, the value read from ``key`` (``get``)."""
        if data is None:
            return None
        manifest = Manifest.decode(data)
        if manifest is None:
            return unpack(data)
        try:
            return read_npz(ChunkReader(self.redis, manifest))
        except ValueGone:  # gone as a whole: so goes its manifest, for whoever checks that it exists
            self.redis.delete(key)
            return None

    # -- cache entries (TTL, evictable)
    def present(self, tile_keys: list[str]) -> list[bool]:
        pipe = self.redis.pipeline(transaction=False)
        for key in tile_keys:
            pipe.exists(key)
        return [bool(n) for n in pipe.execute()]

    def count(self, counter: str, by: int = 1) -> None:
        self.redis.hincrby(keys.STATS, counter, by)

    # -- progress and the join
    def set_total(self, job_id: str, total: int, done: list[str]) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(keys.job(job_id), "total", total)
        pipe.delete(keys.job_tiles_done(job_id))
        if done:
            pipe.sadd(keys.job_tiles_done(job_id), *done)
        pipe.hdel(keys.job(job_id), "finish_enqueued")
        pipe.execute()

    def tile_done(self, job_id: str, tile_key: str, lane: str = "batch") -> None:
        """Count a tile; the task that completes the set enqueues the join, exactly once per round."""
        pipe = self.redis.pipeline()
        pipe.sadd(keys.job_tiles_done(job_id), tile_key)
        pipe.scard(keys.job_tiles_done(job_id))
        pipe.hget(keys.job(job_id), "total")
        _, done, total = pipe.execute()
        if total is not None and done >= int(total):
            self.enqueue_finish(job_id, lane)

    def enqueue_finish(self, job_id: str, lane: str) -> None:
        if self.redis.hsetnx(keys.job(job_id), "finish_enqueued", 1):
            enqueue(self.broker, FINISH, job_id, lane=lane)
