"""The story in two pictures, told through the Python SDK against a running service.

1. ``mc_convergence.png``: the NTK of finite networks (``method="monte_carlo"``: empirical NTKs
   of randomly initialized networks, averaged) approaches the analytic infinite-width NTK as the
   width grows; the relative error falls roughly like 1/sqrt(width). The empirical NNGP is drawn
   too, as a contrast: with one output unit each network contributes a single Gaussian-process
   sample f(x1) f(x2), so its error shrinks with the number of networks, not with their width.
2. ``regression.png``: a 1-D regression by the infinitely wide network trained with gradient
   descent: the predicted mean and a ±2σ band (over random initializations) at several training
   times t, from one request (t is a list), ending at t = ∞.

Usage::

    ntk serve &                                    # or any running service
    python examples/seed_story.py --url http://localhost:8000 --out out/
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ntk_client import Client, stax  # noqa: E402


def network(width: int) -> stax.Serial:
    return stax.serial(
        stax.Dense(width, w_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(width, w_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, w_std=1.5, b_std=0.05),
    )


def convergence(client: Client, out: Path, widths: list[int], samples: int) -> Path:
    """Relative error of the Monte Carlo NNGP and NTK against the analytic ones, by width."""
    x = np.random.default_rng(0).normal(size=(16, 8))
    exact = client.kernels(network(1), x)  # analytic: the width does not enter
    errors: dict[str, list[float]] = {"nngp": [], "ntk": []}
    stderrs: dict[str, list[float]] = {"nngp": [], "ntk": []}
    for width in widths:
        estimate = client.kernels(network(width), x, method="monte_carlo", samples=samples, seed=0)
        for name in errors:
            scale = np.linalg.norm(exact[name])
            errors[name].append(np.linalg.norm(estimate[name] - exact[name]) / scale)
            stderrs[name].append(np.linalg.norm(estimate[f"{name}_stderr"]) / scale)
        print(f"width {width:5d}: relative error NNGP {errors['nngp'][-1]:.4f}, NTK {errors['ntk'][-1]:.4f}")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, color in (("nngp", "tab:blue"), ("ntk", "tab:red")):
        label = "NTK: |Θ_mc − Θ| / |Θ|" if name == "ntk" else "NNGP: |K_mc − K| / |K| (shrinks with samples only)"
        ax.loglog(widths, errors[name], "o-", color=color, label=label)
        ax.loglog(widths, stderrs[name], ":", color=color, alpha=0.7, label=f"{name.upper()}: reported std. error")
    guide = errors["ntk"][0] * np.sqrt(widths[0] / np.asarray(widths, dtype=float))
    ax.loglog(widths, guide, "k--", lw=1, label="∝ 1/√width")
    ax.set_xlabel("width of the hidden layers")
    ax.set_ylabel("relative Frobenius error")
    ax.set_title(f"Monte Carlo kernels → analytic ({samples} networks per width)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "mc_convergence.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def regression(client: Client, out: Path) -> Path:
    """Mean ± 2σ of the trained infinite ensemble at several times, on noisy samples of a sine."""
    rng = np.random.default_rng(1)
    x_train = np.sort(rng.uniform(-np.pi, np.pi, size=(12, 1)), axis=0)
    y_train = np.sin(x_train) + 0.05 * rng.normal(size=x_train.shape)
    x_test = np.linspace(-1.5 * np.pi, 1.5 * np.pi, 200)[:, None]
    times = [1.0, 10.0, 100.0, None]  # None: t = ∞, trained to convergence

    prediction = client.predict(network(512), x_train, y_train, x_test, t=times, diag_reg=1e-4)

    fig, axes = plt.subplots(1, len(times), figsize=(4 * len(times), 3.6), sharey=True)
    for i, (ax, t) in enumerate(zip(axes, times)):
        mean, std = prediction.mean[i, :, 0], prediction.std[i]
        ax.fill_between(x_test[:, 0], mean - 2 * std, mean + 2 * std, color="tab:blue", alpha=0.25, label="±2σ")
        ax.plot(x_test[:, 0], mean, color="tab:blue", label="mean")
        ax.plot(x_test[:, 0], np.sin(x_test[:, 0]), "k:", lw=1, label="sin x")
        ax.plot(x_train[:, 0], y_train[:, 0], "o", color="tab:red", ms=4, label="training data")
        ax.set_title("t = ∞" if t is None else f"t = {t:g}")
        ax.set_xlabel("x")
        ax.set_ylim(-2.5, 2.5)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Infinitely wide ReLU network trained by gradient descent (NTK)")
    fig.tight_layout()
    path = out / "regression.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("NTK_URL", "http://localhost:8000"))
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--samples", type=int, default=16, help="networks averaged per width")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with Client(args.url, timeout=300) as client:
        print("wrote", convergence(client, args.out, args.widths, args.samples))
        print("wrote", regression(client, args.out))


if __name__ == "__main__":
    main()
