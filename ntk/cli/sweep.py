"""``ntk sweep``: one row of numbers per architecture of a grid (or a list), into a CSV file.

    ntk sweep --train train.npz [--val val.npz] --base base.json --grid 'depth=1..10' \\
              --grid 'w_std=1.0,1.5,2.0' [--diag-reg fit] --out rows.csv [--url http://host:8000]

The base is an architecture or a stack ``{stem, block, depth, readout}`` (ntk.spec.sweep_grid);
``--architectures`` takes a JSON list (or object label -> architecture) instead. Computed here by
the engine (ntk.engine.sweep), or by a server with --url, as ``ntk kernel`` and ``ntk predict``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .arrays import (add_run_options, connect, engine_settings, read_text, read_training_set, reason)
from .errors import UsageError, UserError, engine_errors, server_errors, settings_errors


def grid_entry(text: str) -> tuple[str, list]:
    """--grid 'key=values': ``a..b`` is the integers a to b; otherwise a comma list, each value
    read as JSON when it is JSON (1.5, true, {"type": "Erf"}) and as text otherwise (Relu)."""
    key, sep, values = text.partition("=")
    key, values = key.strip(), values.strip()
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: write key=values, e.g. depth=1..10 or w_std=1.0,1.5")
    low, dots, high = values.partition("..")
    if dots:
        try:
            low, high = int(low), int(high)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: a range a..b takes two integers") from None
        if high < low:
            raise argparse.ArgumentTypeError(f"{text!r}: the range {low}..{high} is empty")
        return key, list(range(low, high + 1))
    return key, [json_or_text(value.strip()) for value in split_top_level(values)]


def split_top_level(values: str) -> list[str]:
    """Split at the commas outside brackets and braces, so that an object value keeps its own."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(values):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(values[start:i])
            start = i + 1
    return parts + [values[start:]]


def json_or_text(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def diag_reg(text: str) -> float | str:
    if text == "fit":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give fit or a number >= 0")
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="marginal likelihood (and validation error) of many architectures, "
                              "into a CSV")
    p.add_argument("--train", required=True, help=".npz with arrays x (inputs) and y (targets, (N,) or (N, k))")
    p.add_argument("--val", help=".npz with arrays x and y: adds the t = ∞ predictors' validation MSE and accuracy")
    p.add_argument("--base", help="the architecture (or stack {stem, block, depth, readout}) the grid varies: JSON")
    p.add_argument("--grid", action="append", type=grid_entry, default=[], metavar="KEY=VALUES",
                   help="a parameter and its values, repeatable: depth=1..10, w_std=1.0,1.5, activation=Relu,Erf")
    p.add_argument("--architectures", help="instead of --base and --grid: a JSON list of architectures (or an "
                   "object label -> architecture)")
    p.add_argument("--diag-reg", type=diag_reg, default="fit", help="ε relative to the kernel's mean diagonal, or "
                   "fit: the ε of the largest marginal likelihood, per architecture")
    add_run_options(p, run, out="output .csv: a row per architecture", dtype="floating-point precision of the kernels")


def run(args) -> int:
    if (args.base is None) == (args.architectures is None):
        raise UsageError("give --base (with --grid) or --architectures")
    if args.architectures is not None and args.grid:
        raise UsageError("--grid varies a --base; --architectures lists them instead")
    keys = [key for key, _ in args.grid]
    if len(set(keys)) < len(keys):
        raise UsageError(f"--grid names a key twice: {', '.join(sorted({k for k in keys if keys.count(k) > 1}))}")
    base = None if args.base is None else read_json(args.base)
    architectures = None if args.architectures is None else read_json(args.architectures)
    grid = dict(args.grid)
    x_train, y_train = read_training_set(args.train)
    x_val, y_val = (None, None) if args.val is None else read_training_set(args.val, "--val")
    if args.url:
        with server_errors(args.url), connect(args) as client:
            rows = client.sweep(x_train, y_train, base=base, grid=grid, architectures=architectures, x_val=x_val,
                                y_val=y_val, diag_reg=args.diag_reg, dtype=args.dtype)
    else:
        with engine_errors():
            rows = sweep_locally(base, grid, architectures, x_train, y_train, x_val, y_val, args)
    write_csv(args.out, rows)
    return 0


def read_json(path: str):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON: {e}") from e


def sweep_locally(base, grid, architectures, x_train, y_train, x_val, y_val, args) -> list[dict]:
    """As a worker computes it, under the same settings (NTK_MAX_SWEEP_ARCHITECTURES, NTK_SWEEP_BYTES)."""
    import torch

    from ntk.core.settings import get_settings
    from ntk.engine.sweep import sweep
    from ntk.spec.sweep_grid import expand
    from ntk.worker.allocator import keep_freed_memory

    with settings_errors():
        settings = get_settings()
    points = expand(base, grid or None, architectures, max_architectures=settings.max_sweep_architectures)
    keep_freed_memory()
    return sweep(points, x_train, y_train, x_val, y_val, diag_reg=args.diag_reg, dtype=getattr(torch, args.dtype),
                 max_bytes=settings.sweep_bytes, **engine_settings(args.device))


def write_csv(path: str, rows: list[dict]) -> None:
    from ntk.core.table import columns, to_csv

    try:
        Path(path).write_text(to_csv(columns(rows), rows), newline="")
    except OSError as e:
        raise UserError(f"{path}: cannot write: {reason(e)}") from e
    failed = sum(1 for row in rows if row.get("error"))
    print(f"wrote {path}: {len(rows)} architectures" + (f", {failed} without numbers (see error)" if failed else ""))
