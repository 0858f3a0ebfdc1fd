"""Arrays as they arrive: inline JSON lists and npy/npz bodies, checked, and named by content.

Dataset ids are a content hash that the SDK computes client-side too (to skip an upload the server
already holds), so the recipe below is part of the contract: for each of ``x`` then ``y`` that is
present, hash ``"{name}:{dtype.str}:{shape}|"`` and then the array's C-order bytes.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import math
import re
import tokenize
import zipfile
import zlib

import numpy as np

from ntk.api.problems import Problem, invalid

HEX_ID = re.compile(r"[0-9a-f]{64}")
NUMERIC_KINDS = "iuf"
MAX_AXES = 4  # (N, H, W, C)
# The JSON names of the Python types json.loads makes, for saying what an array must not hold.
JSON_TYPES = {bool: "true/false", str: "strings", type(None): "null", dict: "objects"}
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# What numpy's header parser (tokenize, then ast.literal_eval) raises on junk, besides ValueError.
NPY_HEADER_ERRORS = (ValueError, TypeError, SyntaxError, RecursionError, tokenize.TokenError)
# What zipfile raises on a damaged archive (bad offsets, names, CRCs, compressed data) or one it cannot read.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, NotImplementedError,
              RuntimeError)


def content_hash(**arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for name in ("x", "y"):
        a = arrays.get(name)
        if a is not None:
            h.update(f"{name}:{a.dtype.str}:{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def from_json(value, path: str) -> np.ndarray:
    """An inline nested list as float64; ragged, too deep, non-numeric or non-finite entries are a 422.

    The entries are first gathered as the Python objects JSON made of them, since numpy would
    silently read ``true`` as 1 and ``"2"`` next to numbers as a string array.
    """
    depth = nesting(value)
    if depth > MAX_AXES:
        raise invalid(path, f"the array nests lists {depth} deep; arrays have at most {MAX_AXES} axes")
    entries = np.array(value, dtype=object)
    kinds = {type(entry) for entry in entries.flat}
    if list in kinds:
        raise invalid(path, "the array is ragged: every row must have the same length")
    strange = kinds - {int, float}
    if strange:
        names = sorted(JSON_TYPES.get(kind, kind.__name__) for kind in strange)
        raise invalid(path, f"the array must hold numbers only, not {', '.join(names)}")
    try:
        a = entries.astype(np.float64)
    except OverflowError:
        raise invalid(path, "the array holds an integer too large for float64") from None
    return checked(a, path)


def nesting(value) -> int:
    """How many lists deep ``value`` goes, along its first entries."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


def checked(a: np.ndarray, path: str) -> np.ndarray:
    if a.dtype.kind not in NUMERIC_KINDS:
        raise invalid(path, f"the array must be numeric, not {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise invalid(path, "the array holds NaN or infinity")
    return a


def check_points(shape: tuple | list, path: str) -> None:
    """Inputs are (N, d), (N, L, C) or (N, H, W, C), no axis empty."""
    if len(shape) not in (2, 3, 4) or 0 in shape:
        raise invalid(path, f"inputs must be (N, d), (N, L, C) or (N, H, W, C) with no empty axis, "
                      f"got shape {list(shape)}")


def check_targets(shape: tuple | list, n: int, path: str) -> None:
    if len(shape) not in (1, 2) or shape[0] != n or 0 in shape:
        raise invalid(path, f"targets must be (N,) or (N, k) with N = {n}, the number of points, "
                      f"got shape {list(shape)}")


def from_npy(body: bytes, max_bytes: int) -> np.ndarray:
    return read_npy(io.BytesIO(body), "x", max_bytes)


def from_npz(body: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of an npz archive by name, together at most ``max_bytes`` once decompressed."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except ZIP_ERRORS as e:
        raise Problem(400, "Malformed npz", f"the body is not a readable npz archive: {e}") from None
    arrays = {}
    with archive:
        for member in archive.namelist():
            name = member.removesuffix(".npy")
            try:
                with archive.open(member) as stream:
                    arrays[name] = read_npy(stream, name, max_bytes)
            except ZIP_ERRORS as e:
                raise Problem(400, "Malformed npz", f"{name}: the archive member {member} cannot be read: {e}") from None
            max_bytes -= arrays[name].nbytes
    return arrays


def read_npy(stream, name: str, max_bytes: int) -> np.ndarray:
    """One npy array, its header checked before any memory is set aside for its data.

    A header declares a shape and dtype that the bytes after it need not match: a few bytes can
    claim terabytes, and a compressed npz member can inflate to them. So the declared size is held
    against ``max_bytes`` (413) and against the bytes that follow (400) before the array is made.
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version not in NPY_HEADER_READERS:
            raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported")
        shape, fortran_order, dtype = NPY_HEADER_READERS[version](stream)
    except NPY_HEADER_ERRORS as e:
        raise Problem(400, "Malformed npy", f"{name}: not a readable npy array: {e}") from None
    if dtype.kind not in NUMERIC_KINDS:
        raise invalid(name, f"the array must be numeric, not {dtype}")
    if any(n < 0 for n in shape):
        raise Problem(400, "Malformed npy", f"{name}: the npy header declares a negative shape {list(shape)}")
    check_axes(shape, dtype, name, max_bytes)
    size = math.prod(shape) * dtype.itemsize
    if size > max_bytes:
        raise Problem(413, "Content too large", f"{name}: the npy header declares a {dtype} array of shape "
                      f"{list(shape)}, {size} bytes; at most {max_bytes} are accepted (NTK_MAX_BODY_BYTES)")
    data = stream.read(size + 1)
    if len(data) != size:
        raise Problem(400, "Malformed npy", f"{name}: the npy header declares {size} bytes of data but "
                      f"{'fewer' if len(data) < size else 'more'} follow")
    array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")
    # Big-endian arrays (">f4") are stored as the same numbers in native order: what the workers compute with.
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def check_axes(shape: tuple, dtype: np.dtype, name: str, max_bytes: int) -> None:
    """Each declared axis on its own, not only their product: with a zero among them the product
    is 0 whatever the others claim, and numpy cannot make an array of shape (2^63, 0)."""
    longest = max_bytes // dtype.itemsize  # a non-empty array with a longer axis exceeds max_bytes
    for axis, n in enumerate(shape):
        if n > longest:
            setting = "NTK_MAX_BODY_BYTES"
            message = (f"axis {axis} of the npy header declares {n} entries; at most {longest} {dtype} entries "
                       f"fit {max_bytes} bytes ({setting})")
            raise Problem(422, "Invalid input", f"{name}: {message}", errors=[{"path": name, "message": message}],
                          value=n, limit=longest, setting=setting)
