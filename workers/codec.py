"""Arrays as bytes in Redis: one array as npy, several as an uncompressed npz (never pickled)."""

from __future__ import annotations

import io
import zipfile

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
