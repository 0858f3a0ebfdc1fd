"""Reading the CLI's inputs (spec JSON, .npy/.npz arrays) and writing its .npz answers, and the
options that ``kernel``, ``predict`` and ``sweep`` share. Every unusable input is a UserError naming the file."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .errors import UsageError, UserError, settings_errors

DTYPES = ("float32", "float64")
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"  # .npz files are zip archives


def read_spec(path: str) -> dict:
    """An architecture spec (docs/architecture.md) from a JSON file."""
    text = read_text(path)
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(spec, dict):
        raise UserError(f"{path}: an architecture is a JSON object {{\"layers\": [...]}}, got {type(spec).__name__}")
    return spec


def read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {reason(e)}") from e


def load(path: str) -> np.ndarray | np.lib.npyio.NpzFile:
    """What np.load finds in a .npy or .npz file (pickled objects refused)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise UserError(f"{path}: {reason(e)}") from e
    if not magic.startswith((NPY_MAGIC, ZIP_MAGIC)):
        raise UserError(f"{path}: not a .npy or .npz file (numpy.save and numpy.savez write them)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: unreadable .npy/.npz file ({reason(e)})") from e


def read_array(path: str, field: str = "x") -> np.ndarray:
    """A .npy file, or one field of a .npz file: finite numbers."""
    data = load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if field not in data:
                raise UserError(f"{path}: no array '{field}' (it has {', '.join(data.files) or 'none'})")
            try:
                array = data[field]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise UserError(f"{path}: array '{field}' is unreadable ({reason(e)})") from e
        where = f"{path}[{field}]"
    else:
        array, where = data, path
    if array.dtype.kind not in "biuf":
        raise UserError(f"{where}: holds {array.dtype} values, not numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UserError(f"{where}: holds NaN or infinite values")
    return array


def read_training_set(path: str, option: str = "--train") -> tuple[np.ndarray, np.ndarray]:
    """The x (inputs) and y (targets or class labels) arrays of an .npz file (given as ``option``)."""
    if not isinstance(load(path), np.lib.npyio.NpzFile):
        raise UsageError(f"{option} {path}: an .npy file holds one array; {option} takes an .npz with arrays "
                         "x (inputs) and y (targets or labels), as numpy.savez(path, x=x, y=y) writes")
    return read_array(path, "x"), read_array(path, "y")


def reason(error: Exception) -> str:
    """An exception's message without its errno prefix ("No such file or directory")."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def write_npz(path: str, fields: dict) -> None:
    try:
        np.savez(path, **{k: np.asarray(v) for k, v in fields.items() if v is not None})
    except OSError as e:
        raise UserError(f"{path}: cannot write: {reason(e)}") from e
    print(f"wrote {path}: " + ", ".join(f"{k} {np.shape(v)}" for k, v in fields.items() if v is not None))


def add_run_options(parser, run, *, out: str, dtype: str = "floating-point precision of the computation") -> None:
    """The options every computing command ends with (precision, device, output file; --url sends
    the work to a server through the SDK instead of computing here), and ``run`` as its action."""
    parser.add_argument("--dtype", default="float64", choices=DTYPES, help=dtype)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default $NTK_DEVICE or auto)")
    parser.add_argument("--out", required=True, help=out)
    parser.add_argument("--url", help="compute on this ntk server instead of locally")
    parser.add_argument("--api-key", help="bearer key for --url (default: $NTK_API_KEY)")
    parser.set_defaults(func=run)


def connect(args):
    """The SDK's Client for --url (inside ``errors.server_errors``, which says where to get it)."""
    from ntk_client import Client

    return Client(args.url, api_key=args.api_key)


def engine_settings(device_name: str | None) -> dict:
    """The engine's device (--device, else NTK_DEVICE) and memory budget (NTK_BLOCK_BYTES,
    NTK_CACHE_BYTES), as a worker takes them from the settings: ``kernel_fn``'s keywords."""
    from ntk.core.settings import get_settings
    from ntk.engine.kernel import Budget

    with settings_errors():
        settings = get_settings()
    return {"device": local_device(device_name, settings.device),
            "budget": Budget(settings.block_bytes, settings.cache_bytes)}


def local_device(name: str | None, default: str):
    """--device (else ``default``, NTK_DEVICE's) as a torch device, checked here: a CUDA device
    that does not exist is a user error."""
    import torch

    from ntk.engine.kernel import resolve_device

    given = f"--device {name}" if name else f"NTK_DEVICE={default}"
    try:
        device = resolve_device(name or default)
    except RuntimeError as e:
        raise UserError(f"{given}: not a device (auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"{given}: this machine has {torch.cuda.device_count()} CUDA devices")
    return device
