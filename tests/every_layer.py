"""One small architecture for each layer type (and each Elementwise function), with an input it takes.

Used three ways: ``.ci/run`` sends each to the service that README's run command started (over
HTTP, ``python3 tests/every_layer.py URL``), ``tests/service/test_deploy.py`` computes each with the
``ntk`` that the image's install script installed, and ``test_every_layer_type_is_covered`` keeps
this list complete as layer types are added.
"""

from __future__ import annotations

import sys

import numpy as np

DENSE = {"type": "Dense", "out_dim": 16, "w_std": 1.5, "b_std": 0.05}
READOUT = {"type": "Dense", "out_dim": 1}
CONV = {"type": "Conv", "out_chan": 4, "filter_shape": [2, 2], "padding": "SAME"}


def _fc(*layers: dict) -> dict:
    return {"layers": [DENSE, *layers, READOUT]}


def _image(*layers: dict, readout: tuple[dict, ...] = ({"type": "Flatten"},)) -> dict:
    return {"layers": [CONV, *layers, *readout, READOUT]}


# name -> (architecture, one point's shape)
ARCHITECTURES: dict[str, tuple[dict, tuple[int, ...]]] = {
    "Dense": (_fc(), (3,)),
    "Relu": (_fc({"type": "Relu"}), (3,)),
    "Abs": (_fc({"type": "Abs"}), (3,)),
    "Sign": (_fc({"type": "Sign"}), (3,)),
    "Identity": (_fc({"type": "Identity"}), (3,)),
    "LeakyRelu": (_fc({"type": "LeakyRelu", "alpha": 0.1}), (3,)),
    "ABRelu": (_fc({"type": "ABRelu", "a": -0.5, "b": 1.0}), (3,)),
    "Erf": (_fc({"type": "Erf"}), (3,)),
    "Gelu": (_fc({"type": "Gelu"}), (3,)),
    "Sin": (_fc({"type": "Sin"}), (3,)),
    **{f"Elementwise-{fn}": (_fc({"type": "Elementwise", "fn": fn}), (3,))
       for fn in ("tanh", "sigmoid", "softplus", "silu", "elu")},
    "LayerNorm": (_fc({"type": "LayerNorm"}, {"type": "Relu"}), (3,)),
    "Residual": (_fc({"type": "Residual", "layers": [{"type": "Relu"}, {"type": "Dense", "out_dim": 16}]}), (3,)),
    "Conv": (_image({"type": "Relu"}), (4, 4, 2)),
    "Conv-1d": ({"layers": [{"type": "Conv", "out_chan": 4, "filter_shape": [3], "padding": "CIRCULAR"},
                            {"type": "Relu"}, {"type": "Flatten"}, READOUT]}, (5, 2)),
    "Flatten": (_image(), (4, 4, 2)),
    "AvgPool": (_image({"type": "Relu"}, {"type": "AvgPool", "window_shape": [2, 2]}), (4, 4, 2)),
    "GlobalAvgPool": (_image({"type": "Relu"}, readout=({"type": "GlobalAvgPool"},)), (4, 4, 2)),
}


def inputs(shape: tuple[int, ...], n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *shape))


def probe(url: str) -> list[str]:
    """Ask the service at ``url`` for both kernels of each architecture; return what failed."""
    import httpx

    failures = []
    for name, (arch, shape) in ARCHITECTURES.items():
        r = httpx.post(f"{url}/v1/kernels", params={"wait": 120}, timeout=180,
                       json={"architecture": arch, "x1": inputs(shape).tolist(), "get": ["nngp", "ntk"]})
        body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
        ok = r.status_code == 200 and all(np.isfinite(np.asarray(body.get(k, [np.nan]), dtype=float)).all()
                                          for k in ("nngp", "ntk"))
        print(f"{name:22s} {r.status_code} {'ok' if ok else r.text[:300]}")
        if not ok:
            failures.append(name)
    return failures


if __name__ == "__main__":
    sys.exit(1 if probe(sys.argv[1].rstrip("/")) else 0)
