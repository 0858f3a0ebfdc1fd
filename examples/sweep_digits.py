"""Choosing the depth and weight scale of a ReLU network on scikit-learn's handwritten digits.

One sweep computes the NNGP and NTK kernels of every architecture of the grid (depth 1-12 ×
w_std 1.0-2.5, each a stack of [Dense, Relu] blocks and a Dense readout with b_std 0.1), sharing
the layers they have in common, and answers one row per architecture: the NNGP log marginal
likelihood of the training labels (output scale fitted in closed form, noise fitted) and the
validation accuracy of the t = ∞ NNGP and NTK predictors. The figure sets the two side by side:
the marginal likelihood, computed from the training set alone, picks an architecture whose
validation accuracy is near the best.

Usage::

    python examples/sweep_digits.py [--train 600] [--val 400] [--out examples/sweep_digits.png]
    python examples/sweep_digits.py --url http://localhost:8000     # the same sweep on a server

The sweep runs in this process (``ntk.engine.sweep``), or with ``--url`` on a running service as
one request, ``Client(url).sweep(...)`` (POST /v1/sweeps): the same rows either way.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "clients" / "python"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from ntk_client import Client, plot_sweep  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from ntk.engine.sweep import sweep  # noqa: E402
from ntk.spec.sweep_grid import expand  # noqa: E402

BASE = {"parameterization": "ntk",
        "block": [{"type": "Dense", "out_dim": 512, "b_std": 0.1}, {"type": "Relu"}],
        "readout": [{"type": "Dense", "out_dim": 10, "b_std": 0.1}]}
GRID = {"depth": list(range(1, 13)), "w_std": [1.0, 1.5, 2.0, 2.5]}


def run_sweep(base, grid, x_train, y_train, x_val, y_val, url: str | None = None) -> list[dict]:
    """The rows of the sweep: on the service at ``url``, else in this process."""
    if url:
        with Client(url) as client:
            return client.sweep(x_train, y_train, base=base, grid=grid, x_val=x_val, y_val=y_val, diag_reg="fit")
    return sweep(expand(base, grid), x_train, y_train, x_val, y_val, diag_reg="fit")


def digits(train: int, val: int, seed: int = 0):
    """Standardized 8×8 digits (64 features) and centred one-hot labels, (N, 10)."""
    x, labels = load_digits(return_X_y=True)
    x_train, x_val, l_train, l_val = train_test_split(x, labels, train_size=train, test_size=val,
                                                      random_state=seed, stratify=labels)
    scaler = StandardScaler().fit(x_train)
    one_hot = np.eye(10) - 0.1
    return scaler.transform(x_train), one_hot[l_train], scaler.transform(x_val), one_hot[l_val]


def plot(rows: list[dict], path: str) -> None:
    """Marginal likelihood, NNGP validation MSE and NTK validation accuracy against depth, one line per
    w_std; a star on the architecture of the largest marginal likelihood."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    metrics = [("log_marginal_likelihood", "NNGP log marginal likelihood (train)"),
               ("nngp_mse", "NNGP validation MSE"), ("ntk_accuracy", "NTK validation accuracy")]
    for ax, (metric, title) in zip(axes, metrics):
        plot_sweep(rows, x="depth", y=metric, line="w_std", ax=ax)
        ax.set(title=title, xlabel="depth (Dense + Relu blocks)", ylabel=None)
    best = max((row for row in rows if not row["error"]), key=lambda row: row["log_marginal_likelihood"])
    for ax, (metric, _) in zip(axes, metrics):
        ax.plot(best["depth"], best[metric], "k*", ms=14, label="best marginal likelihood")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=400)
    parser.add_argument("--depths", type=int, default=max(GRID["depth"]))
    parser.add_argument("--url", help="sweep on this running service (default: in this process)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "sweep_digits.png"))
    args = parser.parse_args(argv)

    grid = {**GRID, "depth": list(range(1, args.depths + 1))}
    rows = run_sweep(BASE, grid, *digits(args.train, args.val), url=args.url)
    print(f"{'depth':>5} {'w_std':>5} {'log p(y)':>10} {'diag_reg':>9} {'NNGP acc':>9} {'NTK acc':>8}")
    for row in rows:
        print(f"{row['depth']:5d} {row['w_std']:5.2f} {row['log_marginal_likelihood']:10.1f} {row['diag_reg']:9.2e} "
              f"{row['nngp_accuracy']:9.3f} {row['ntk_accuracy']:8.3f}")
    best = max(rows, key=lambda row: row["log_marginal_likelihood"])
    top = max(row["ntk_accuracy"] for row in rows)
    print(f"best marginal likelihood: depth {best['depth']}, w_std {best['w_std']:g} "
          f"(NTK validation accuracy {best['ntk_accuracy']:.3f}; the best of the grid {top:.3f})")
    plot(rows, args.out)
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
