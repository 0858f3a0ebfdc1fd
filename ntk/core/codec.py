"""Arrays as bytes in Redis: one array as npy, several as an uncompressed npz (never pickled), and
the manifest of a value stored in chunks (ntk.core.keys: "Values in chunks")."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np


def pack(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


TAIL_BYTES = 1 << 16  # the end of a pack that ``appended`` needs: its central directory (~100 B a member)


def appended(size: int, tail: bytes, **arrays: np.ndarray) -> tuple[int, bytes]:
    """A pack of ``size`` bytes, whose last ``TAIL_BYTES`` are ``tail``, with ``arrays`` added, as
    ``(kept, suffix)``: the new pack is ``pack[:kept] + suffix``. A zip ends in a directory of its
    members, which new members go before; the members already there are kept byte for byte, so
    the API streams ``pack[:kept]`` straight from Redis and never holds a large answer whole."""
    end = _Tail(size, tail)
    with zipfile.ZipFile(end, "a") as archive:
        kept = archive.start_dir
        for name, a in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(a), allow_pickle=False)
    return kept, end.after(kept)


class _Tail(io.RawIOBase):
    """A file of ``size`` bytes of which only the end, ``tail``, is held (read and written):
    enough for zipfile to append, which reads the directory at the end and rewrites it."""

    def __init__(self, size: int, tail: bytes):
        self.start = size - len(tail)
        self.held = io.BytesIO(tail)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.start + self.held.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: self.start + len(self.held.getbuffer())}
        position = base[whence] + offset
        if position < self.start:
            raise ValueError(f"byte {position} lies before the {len(self.held.getbuffer())}-byte tail held")
        self.held.seek(position - self.start)
        return position

    def read(self, size: int = -1) -> bytes:
        return self.held.read(size)

    def write(self, b) -> int:
        return self.held.write(b)

    def truncate(self, size: int | None = None) -> int:
        return self.start + self.held.truncate(None if size is None else size - self.start)

    def after(self, position: int) -> bytes:
        return self.held.getvalue()[position - self.start:]


def unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def pack_array(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, a, allow_pickle=False)
    return buffer.getvalue()


def unpack_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


# -- values in chunks (the layout: ntk.core.keys)
MANIFEST_MAGIC = b"ntk-chunks/1\n"  # an npz starts with "PK": a value is its manifest or its own bytes


def chunk_digest(chunk: bytes) -> str:
    """The name of a chunk: its content's hash (128 bits of SHA-256, which CPUs with SHA
    extensions hash at several times BLAKE2's speed), so a chunk key's bytes never change."""
    return hashlib.sha256(chunk).hexdigest()[:32]


@dataclass(frozen=True)
class Manifest:
    """The chunks of one value, in order, as (digest, length); ``size`` is their total."""

    chunks: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        return sum(length for _, length in self.chunks)

    def encode(self) -> bytes:
        return MANIFEST_MAGIC + json.dumps([list(c) for c in self.chunks], separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Manifest | None":
        """The manifest ``data`` is, or None when ``data`` is a value's own bytes."""
        if not data.startswith(MANIFEST_MAGIC):
            return None
        return cls(tuple((digest, int(length)) for digest, length in json.loads(data[len(MANIFEST_MAGIC):])))


def spans(parts: list[tuple[str, int]], start: int, stop: int, most: int) -> list[tuple[str, int, int]]:
    """Bytes ``[start, stop)`` of a value stored as ``parts`` (key, length) in order, as GETRANGE
    calls (key, first, last), each of at most ``most`` bytes and within one part."""
    out, offset = [], 0
    for key, length in parts:
        lo, hi = max(start, offset), min(stop, offset + length)
        for first in range(lo, hi, most):
            out.append((key, first - offset, min(first + most, hi) - offset - 1))
        offset += length
    return out
