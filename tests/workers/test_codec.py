"""ntk.core.codec: arrays as bytes, and the npz append the API streams answers with."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from ntk.core.codec import TAIL_BYTES, appended, pack, unpack


def zipfile_append(data: bytes, **arrays: np.ndarray) -> bytes:
    """The plain way: the whole pack in memory, zipfile in append mode."""
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, a in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, a, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize("n", [1, 40, 200])
def test_appended_is_zipfile_append_without_the_whole_pack(n):
    rng = np.random.default_rng(n)
    data = pack(nngp=rng.standard_normal((n, n)), ntk=rng.standard_normal((n, n)).astype(np.float32))
    extra = {"cached": np.asarray(True), "t": np.asarray([0.5, np.inf]), "id": np.asarray("ab" * 32)}
    kept, suffix = appended(len(data), data[-TAIL_BYTES:], **extra)
    assert data[:kept] + suffix == zipfile_append(data, **extra)
    out = unpack(data[:kept] + suffix)
    assert set(out) == {"nngp", "ntk", "cached", "t", "id"}
    np.testing.assert_array_equal(out["ntk"], unpack(data)["ntk"])


def test_appended_needs_the_directory_in_the_tail():
    data = pack(a=np.zeros(100))
    with pytest.raises((ValueError, zipfile.BadZipFile)):
        appended(len(data), data[-10:], b=np.ones(2))
