"""Reading the CLI's inputs (spec JSON, .npy/.npz arrays) and writing its .npz answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_spec(path: str) -> dict:
    return json.loads(Path(path).read_text())


def read_array(path: str, field: str = "x") -> np.ndarray:
    """A .npy file, or one field of a .npz file."""
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        if field not in data:
            raise SystemExit(f"{path}: no array '{field}' (has {', '.join(data.files)})")
        return data[field]
    return data


def write_npz(path: str, fields: dict) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in fields.items() if v is not None})
    print(f"wrote {path}: " + ", ".join(f"{k} {np.shape(v)}" for k, v in fields.items() if v is not None))


def add_remote_options(parser) -> None:
    """--url sends the work to a server through the SDK instead of computing here."""
    parser.add_argument("--url", help="compute on this ntk server instead of locally")
    parser.add_argument("--api-key", help="bearer key for --url (default: $NTK_API_KEY)")


def dtype_name(value: str) -> str:
    if value not in ("float32", "float64"):
        raise SystemExit(f"--dtype must be float32 or float64, got {value}")
    return value
