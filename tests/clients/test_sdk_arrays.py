"""Dataset ids, array encodings and the result types: the parts the server must agree with."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest

from ntk_client import Kernels, Prediction, ValidationError, dataset_id
from ntk_client._arrays import as_features, decode_npz, encode_npz, to_nested_list
from ntk_client._models import Job


def test_dataset_id_is_the_documented_recipe_byte_for_byte():
    # Spelled out with literal bytes, so that any change of the format string shows up here.
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = np.array([1, 2, 3], dtype=np.int64)
    h = hashlib.sha256()
    h.update(b"x:<f8:(3, 2)|" + struct.pack("<6d", 0, 1, 2, 3, 4, 5))
    h.update(b"y:<i8:(3,)|" + struct.pack("<3q", 1, 2, 3))
    assert dataset_id(x, y) == h.hexdigest() == "9a4552804d29c0ac2d663bbf56947762292b7c72fa4f6f6e6ba8163855dd0b97"
    assert dataset_id(x) == hashlib.sha256(b"x:<f8:(3, 2)|" + x.tobytes()).hexdigest()


def test_dataset_id_matches_the_fake_servers_independent_copy():
    from fake_server import content_hash

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)).astype(np.float32), rng.normal(size=(7, 2))
    assert dataset_id(x, y) == content_hash(x, y)
    assert dataset_id(x) == content_hash(x, None)


def test_dataset_id_depends_on_layout_not_memory_order():
    x = np.arange(12.0).reshape(3, 4)
    assert dataset_id(np.asfortranarray(x)) == dataset_id(x)
    assert dataset_id(x.astype(">f8")) == dataset_id(x)  # byte order is normalized before hashing
    assert dataset_id(x.tolist()) == dataset_id(x)
    assert dataset_id(x.reshape(4, 3)) != dataset_id(x)  # shape is part of the identity
    assert dataset_id(x.astype(np.float32)) != dataset_id(x)  # and so is the dtype
    assert dataset_id(x, np.zeros(3)) != dataset_id(x)


def test_features_become_float32_or_float64():
    assert as_features(np.arange(3)).dtype == np.float64
    assert as_features([[True, False]]).dtype == np.float64
    assert as_features(np.ones(2, np.float16)).dtype == np.float64
    assert as_features(np.ones(2, np.float32)).dtype == np.float32
    assert dataset_id(np.arange(3)) == dataset_id(np.arange(3.0))


def test_npz_round_trip_turns_0d_members_into_python_values():
    payload = encode_npz(ntk=np.eye(2), cached=np.asarray(True), id=np.asarray("k1"), y=None)
    with np.load(io.BytesIO(payload)) as npz:
        assert sorted(npz.files) == ["cached", "id", "ntk"]
    decoded = decode_npz(payload)
    assert decoded["cached"] is True and decoded["id"] == "k1"
    np.testing.assert_array_equal(decoded["ntk"], np.eye(2))


def test_inline_arrays_must_be_finite():
    assert to_nested_list(np.array([[1.0, 2.0]]), "x1") == [[1.0, 2.0]]
    with pytest.raises(ValidationError) as error:
        to_nested_list(np.array([1.0, np.nan]), "x1")
    assert error.value.errors == [{"path": "x1", "message": "values must be finite"}]
    assert "x1" in str(error.value)


def test_inline_json_keeps_every_float64_bit():
    import json

    x = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_array_equal(np.asarray(json.loads(json.dumps(to_nested_list(x, "x")))), x)


def test_kernels_is_a_dict_of_arrays_with_metadata():
    k = Kernels.from_answer({"id": "abc", "shape": [2, 3], "ntk": [[1, 2, 3], [4, 5, 6]], "cached": True},
                            np.dtype(np.float32))
    assert list(k) == ["ntk"] and k["ntk"].dtype == np.float32 and k["ntk"].shape == (2, 3)
    assert (k.id, k.cached, k.shape) == ("abc", True, (2, 3))


def test_prediction_std_is_the_square_root_of_variance_clipped_at_zero():
    p = Prediction.from_answer({"t": None, "mean": [[0.0], [1.0]], "covariance": [[4.0, 0.0], [0.0, -1e-18]],
                                "variance": [4.0, -1e-18]}, np.dtype(np.float64), t_sent=None)
    np.testing.assert_array_equal(p.std, [2.0, 0.0])
    assert p.t is None


def test_prediction_without_covariance_has_no_std():
    p = Prediction.from_answer({"t": 1.0, "mean": [[0.0]], "max_learning_rate": 2}, np.dtype(np.float64), t_sent=1.0)
    assert p.covariance is None and p.variance is None and p.std is None
    assert p.t == 1.0 and p.max_learning_rate == 2.0


def test_prediction_variance_falls_back_to_the_covariance_diagonal():
    p = Prediction.from_answer({"mean": [[0.0], [0.0]], "covariance": [[[1.0, 0.5], [0.5, 9.0]]] * 2},
                               np.dtype(np.float64), t_sent=[1.0, None])
    np.testing.assert_array_equal(p.variance, [[1.0, 9.0], [1.0, 9.0]])
    np.testing.assert_array_equal(p.t, [1.0, np.inf])  # t sent, since this answer did not echo it


def test_job_from_json():
    job = Job.from_json({"id": "j1", "kind": "kernels", "status": "running", "progress": {"done": 3, "total": 8},
                         "created_at": "2025-01-01T00:00:00Z", "started_at": None, "finished_at": None,
                         "error": None})
    assert job.progress == (3, 8) and job.progress.done == 3 and not job.finished
    assert Job.from_json({"id": "j1", "status": "cancelled"}).finished


def test_the_sdk_imports_nothing_beyond_httpx_and_numpy():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, ntk_client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tqdm', 'starlette', 'fastapi', 'torch', 'scipy', 'pandas'}))")
    env_path = str(Path(__file__).resolve().parents[2] / "clients" / "python")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
