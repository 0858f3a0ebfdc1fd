"""``ntk predict``: the infinite ensemble's test-output Gaussian after training for time t."""

from __future__ import annotations

import argparse
import math

import numpy as np

from ntk.core.job import engine_times, times_as_floats

from .arrays import (add_run_options, connect, engine_settings, read_array, read_spec, read_training_set,
                     write_npz)
from .errors import engine_errors, server_errors


def parse_times(value: str):
    """--t as every interface writes t (ntk.core.job.Times, None = ∞): 'inf' → None; '10' → 10.0;
    '1,10,inf' → [1.0, 10.0, None]."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    try:
        times = [math.inf if p in ("inf", "none", "None") else float(p) for p in parts]
    except ValueError:
        times = []
    if not times or any(math.isnan(t) or t < 0 for t in times):
        raise argparse.ArgumentTypeError(f"{value!r}: give inf, a time >= 0, or a comma-separated list of them")
    times = [None if math.isinf(t) else t for t in times]
    return times[0] if len(times) == 1 else times


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="mean and covariance of the trained infinite ensemble")
    p.add_argument("--arch", required=True, help="architecture spec: a JSON file (docs/architecture.md)")
    p.add_argument("--train", required=True, help=".npz with arrays x (inputs) and y (targets or labels)")
    p.add_argument("--test", required=True, help=".npy (or .npz field x) of test inputs")
    p.add_argument("--t", default="inf", type=parse_times, help="training time: inf, a number, or a comma list")
    p.add_argument("--kernel", default="ntk", choices=("ntk", "nngp", "ntkgp"), help="the ensemble's kernel")
    p.add_argument("--diag-reg", type=float, default=0.0, help="added to the train kernel's diagonal")
    p.add_argument("--diag-reg-absolute-scale", action="store_true",
                   help="--diag-reg as is, not scaled by the mean diagonal")
    p.add_argument("--learning-rate", type=float, default=1.0, help="gradient descent's learning rate")
    p.add_argument("--targets", choices=("one_hot",),
                   help="y holds class labels: regress on centered one-hot targets; the output's labels are "
                        "the classes in column order (predicted class: labels[mean.argmax(-1)])")
    p.add_argument("--no-cov", dest="compute_cov", action="store_false", help="mean only")
    add_run_options(p, run, out="output .npz (t, mean, covariance, variance[, labels])")


def run(args) -> int:
    spec = read_spec(args.arch)
    x_train, y_train = read_training_set(args.train)
    x_test = read_array(args.test)
    options = dict(t=args.t, kernel=args.kernel, diag_reg=args.diag_reg,
                   diag_reg_absolute_scale=args.diag_reg_absolute_scale,
                   learning_rate=args.learning_rate, compute_cov=args.compute_cov)
    if args.url:
        with server_errors(args.url), connect(args) as client:
            p = client.predict(spec, x_train, y_train, x_test, targets=args.targets, dtype=args.dtype, **options)
        fields = {"mean": p.mean, "covariance": p.covariance, "variance": p.variance,
                  "labels": p.labels, "max_learning_rate": p.max_learning_rate}
    else:
        with engine_errors():
            fields = predict_locally(spec, x_train, y_train, x_test, args, options)
    fields["t"] = np.asarray(times_as_floats(args.t), dtype=np.float64)
    write_npz(args.out, fields)
    return 0


def predict_locally(spec, x_train, y_train, x_test, args, options) -> dict:
    """As the service computes it: the same one-hot encoding, and ``labels`` the classes in column order."""
    import torch

    from ntk.engine.predict import class_targets, predict_from_spec
    from ntk.worker.allocator import keep_freed_memory

    keep_freed_memory()
    y, labels = class_targets(y_train) if args.targets == "one_hot" else (y_train, None)
    if np.ndim(y) == 1:
        y = np.asarray(y)[:, None]
    p = predict_from_spec(spec, x_train, y, x_test, dtype=getattr(torch, args.dtype), **engine_settings(args.device),
                          **{**options, "t": engine_times(options["t"])})
    fields = p.as_numpy()
    fields.pop("t")
    fields["max_learning_rate"] = p.extras["max_learning_rate"]
    fields["labels"] = labels
    return fields
