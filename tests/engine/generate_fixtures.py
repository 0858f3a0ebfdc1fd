"""Generate the neural-tangents oracle fixtures for the kernel engine.

Run with the oracle venv (neural-tangents 0.6.5 + jax 0.4.30, x64)::

    /tmp/nt/bin/python tests/engine/generate_fixtures.py [--only SUBSTRING] [--list]

Writes ``tests/fixtures/kernels/<case>.npz`` (keys: ``spec`` 0-d str array with
the JSON architecture, ``x1``, ``x2`` (absent for the symmetric K(x1, x1)
case), ``nngp``, ``ntk`` (float64, (N1, N2)), ``rtol``) and
``tests/fixtures/kernels/INDEX.json`` (case name -> description).

This file is NOT a pytest module (no ``test_`` prefix) and must not be imported
by the test-suite: it needs jax / neural-tangents, which only the oracle venv has.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from nt_bridge import ELEMENTWISE_FNS, to_stax  # noqa: E402  (the translation bench/nt_worker.py uses too)

warnings.filterwarnings("ignore")

OUT_DIR = ROOT / "tests" / "fixtures" / "kernels"

RTOL_ANALYTIC = 1e-6
RTOL_NUMERICAL = 1e-4


def layer_types(layers: list) -> set[str]:
    out = set()
    for l in layers:
        out.add(l["type"])
        if l["type"] == "Residual":
            out |= layer_types(l["layers"])
            out |= layer_types(l.get("shortcut") or [])
    return out


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

RNG = np.random.default_rng(20240607)
_X_CACHE: dict = {}


def _x(name: str, shape):
    """Deterministic random input, memoised by name (same name -> same data)."""
    key = (name, tuple(shape))
    if key not in _X_CACHE:
        _X_CACHE[key] = RNG.standard_normal(shape).astype(np.float64)
    return _X_CACHE[key]


def dense_x(n1=5, n2=4, d=4, sym=False, tag="dense"):
    x1 = _x(tag + "1", (n1, d))
    x2 = None if sym else _x(tag + "2", (n2, d))
    return x1, x2


def conv2d_x(n1=3, n2=2, h=5, w=6, c=2, sym=False, tag="conv2d"):
    x1 = _x(tag + "1", (n1, h, w, c))
    x2 = None if sym else _x(tag + "2", (n2, h, w, c))
    return x1, x2


def conv1d_x(n1=4, n2=3, length=8, c=3, sym=False, tag="conv1d"):
    x1 = _x(tag + "1", (n1, length, c))
    x2 = None if sym else _x(tag + "2", (n2, length, c))
    return x1, x2


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

CASES: dict[str, dict] = {}
PARAMS = ("ntk", "standard")
PSHORT = {"ntk": "ntk", "standard": "std"}


def add(name, layers, x1, x2, desc, param="ntk", rtol=None):
    assert name not in CASES, name
    spec = {"parameterization": param, "layers": copy.deepcopy(layers)}
    if rtol is None:
        rtol = RTOL_NUMERICAL if "Elementwise" in layer_types(layers) else RTOL_ANALYTIC
    CASES[name] = dict(spec=spec, x1=x1, x2=x2, desc=desc, rtol=rtol)


def add_both(name, layers, x1, x2, desc):
    for p in PARAMS:
        add(f"{name}_{PSHORT[p]}", layers, x1, x2, f"{desc} [{p} parameterization]", param=p)


def D(out_dim, w_std=None, b_std=None):
    l = {"type": "Dense", "out_dim": out_dim}
    if w_std is not None:
        l["w_std"] = w_std
    if b_std is not None:
        l["b_std"] = b_std
    return l


def C(out_chan, filter_shape, strides=None, padding=None, w_std=None, b_std=None):
    l = {"type": "Conv", "out_chan": out_chan, "filter_shape": list(filter_shape)}
    if strides is not None:
        l["strides"] = list(strides)
    if padding is not None:
        l["padding"] = padding
    if w_std is not None:
        l["w_std"] = w_std
    if b_std is not None:
        l["b_std"] = b_std
    return l


def A(t, **kw):
    return {"type": t, **kw}


def mlp(act, width=16, w=1.5, b=0.05):
    """Dense -> act -> Dense -> act -> Dense(1)."""
    acts = act if isinstance(act, list) else [act]
    return [D(width, w, b), *acts, D(width, w, b), *copy.deepcopy(acts), D(1, w, b)]


def build_cases():
    # ---------------- dense networks -------------------------------------
    x1, x2 = dense_x()
    add_both("dense_nobias", [D(1)], x1, x2, "single Dense, default w_std, no bias")
    add_both("dense_bias", [D(8, 1.5, 0.1), D(1, 0.8, 0.3)], x1, x2,
             "two Dense layers with bias, no activation")
    add_both("dense_nobias_deep", [D(8, 1.3), D(8, 0.9), D(1)], x1, x2,
             "three Dense layers without bias")

    act_cases = {
        "relu": (A("Relu"), "Relu"),
        "leaky_relu": (A("LeakyRelu", alpha=0.1), "LeakyRelu alpha=0.1"),
        "abrelu": (A("ABRelu", a=-0.3, b=1.2), "ABRelu a=-0.3 b=1.2"),
        "abs": (A("Abs"), "Abs"),
        "sign": (A("Sign"), "Sign (zero NTK derivative)"),
        "identity": (A("Identity"), "Identity activation"),
        "erf": (A("Erf"), "Erf default a,b,c"),
        "erf_abc": (A("Erf", a=0.7, b=1.3, c=0.2), "Erf a=0.7 b=1.3 c=0.2"),
        "gelu": (A("Gelu"), "Gelu exact"),
        "gelu_approx": (A("Gelu", approximate=True),
                        "Gelu approximate=true (NT's kernel ignores `approximate`)"),
        "sin": (A("Sin"), "Sin default a,b,c"),
        "sin_abc": (A("Sin", a=1.5, b=0.6, c=0.4), "Sin a=1.5 b=0.6 c=0.4"),
    }
    for fn in ELEMENTWISE_FNS:
        act_cases[f"elementwise_{fn}"] = (A("Elementwise", fn=fn),
                                          f"Elementwise {fn} (Gauss-Hermite, degree 64)")
    for name, (act, desc) in act_cases.items():
        add_both(f"mlp_{name}", mlp(act), x1, x2, f"Dense-{desc}-Dense-{desc}-Dense(1), x2 given")

    add("mlp_elementwise_tanh_deg32_ntk", mlp(A("Elementwise", fn="tanh", degree=32)),
        x1, x2, "Elementwise tanh with degree 32")
    add("mlp_leaky_relu_neg_alpha_ntk", mlp(A("LeakyRelu", alpha=-0.5)), x1, x2,
        "LeakyRelu with negative alpha=-0.5")
    add("mlp_abrelu_wide_ntk", mlp(A("ABRelu", a=0.5, b=-2.0)), x1, x2,
        "ABRelu a=0.5 b=-2.0")
    add("mlp_mixed_acts_ntk",
        [D(16, 1.4, 0.1), A("Erf"), D(16, 1.2, 0.2), A("Relu"), D(16, 1.1), A("Gelu"),
         D(16, 1.0, 0.05), A("Sin", a=1.0, b=0.8, c=0.1), D(2, 1.0, 0.1)],
        x1, x2, "mixed activations Erf/Relu/Gelu/Sin, 2 outputs")

    # symmetric (x2 absent) variants of the analytic activations
    xs, _ = dense_x(n1=6, sym=True, tag="dense_sym")
    for name in ["relu", "abrelu", "abs", "sign", "erf_abc", "gelu", "sin_abc",
                 "elementwise_tanh"]:
        act, desc = act_cases[name]
        add_both(f"mlp_{name}_sym", mlp(act), xs, None, f"{desc}, symmetric K(x1,x1)")
    add_both("dense_bias_sym", [D(8, 1.5, 0.1), D(1, 0.8, 0.3)], xs, None,
             "two Dense layers with bias, symmetric")

    # deep / large w_std / multi-output
    deep = []
    for _ in range(6):
        deep += [D(32, 1.4, 0.1), A("Relu")]
    deep += [D(1, 1.4, 0.1)]
    add_both("deep_relu_6", deep, x1, x2, "6 x (Dense+Relu) + Dense, x2 given")
    add_both("deep_relu_6_sym", deep, xs, None, "6 x (Dense+Relu) + Dense, symmetric")
    deep_erf = []
    for _ in range(6):
        deep_erf += [D(32, 1.6, 0.2), A("Erf")]
    deep_erf += [D(1)]
    add("deep_erf_6_ntk", deep_erf, x1, x2, "6 x (Dense+Erf) + Dense")
    deep_gelu = []
    for _ in range(5):
        deep_gelu += [D(32, 1.3, 0.1), A("Gelu")]
    deep_gelu += [D(1)]
    add("deep_gelu_5_ntk", deep_gelu, xs, None, "5 x (Dense+Gelu) + Dense, symmetric")
    add_both("large_wstd_relu", mlp(A("Relu"), w=3.0, b=0.5), x1, x2,
             "Relu MLP with w_std=3.0, b_std=0.5")
    add("large_wstd_erf_ntk", mlp(A("Erf"), w=3.0, b=1.0), x1, x2,
        "Erf MLP with w_std=3.0, b_std=1.0")
    add_both("multi_output_relu", [D(16, 1.5, 0.05), A("Relu"), D(3, 1.2, 0.1)], x1, x2,
             "final Dense with out_dim 3")

    # single point
    xp, _ = dense_x(n1=1, sym=True, tag="single")
    add_both("single_point_relu_sym", mlp(A("Relu")), xp, None, "one point, symmetric (1x1)")
    add("single_point_vs_many_relu_ntk", mlp(A("Relu")), xp, x2, "one x1 point vs 4 x2 points")
    add("single_point_erf_sym_ntk", mlp(A("Erf")), xp, None, "one point Erf, symmetric")

    # repeated points: exact diagonal matters for arccos / arctan2 guards
    base = _x("rep_base", (3, 4))
    xr1 = np.concatenate([base, base[:2], base[:1]], axis=0)  # rows 0,1,2,0,1,0
    xr2 = np.concatenate([base[1:2], 2.0 * base[2:3], base[:1]], axis=0)  # same dir / same pt
    for name in ["relu", "leaky_relu", "abrelu", "abs", "sign", "gelu", "erf", "sin",
                 "elementwise_tanh"]:
        act, desc = act_cases[name]
        add(f"repeated_{name}_sym_ntk", mlp(act), xr1, None,
            f"{desc}; x1 has duplicate rows, symmetric")
    add_both("repeated_relu", mlp(A("Relu")), xr1, xr2,
             "Relu; x2 rows equal to / parallel to x1 rows")
    add("repeated_relu_nobias_ntk", [D(16, 1.5), A("Relu"), D(16, 1.5), A("Relu"), D(1)],
        xr1, xr2, "Relu without bias; x2 has a row parallel to an x1 row (cos=1)")
    add("repeated_sign_nobias_ntk", [D(16, 1.5), A("Sign"), D(1)], xr1, xr2,
        "Sign without bias; parallel rows")
    add("repeated_deep_relu_sym_ntk", deep, xr1, None, "deep Relu with duplicate rows")

    # depth 300 (NTK_MAX_LAYERS admits 1024): 300 x (Dense + activation) + Dense, x2 holding a
    # copy of an x1 row, so an entry of two identical points is compared too
    for name, act, w, b in [("relu", A("Relu"), 1.4, 0.1), ("erf", A("Erf"), 1.3, 0.1)]:
        layers = [D(64, w, b), copy.deepcopy(act)] * 300 + [D(1, w, b)]
        add(f"deep_{name}_300_ntk", layers, xr1, xr2,
            f"300 x (Dense+{act['type']}) + Dense; x2 repeats x1 rows")

    # zero input row (zero variance if no bias)
    xz1 = _x("zero1", (4, 4)).copy()
    xz1[1] = 0.0
    xz2 = _x("zero2", (3, 4)).copy()
    xz2[2] = 0.0
    zero_cases = {}
    for name in ["relu", "leaky_relu", "abrelu", "abs", "sign", "identity", "erf",
                 "erf_abc", "gelu", "sin", "sin_abc"] + [f"elementwise_{f}" for f in ELEMENTWISE_FNS]:
        act, desc = act_cases[name]
        zero_cases[f"zero_row_{name}_nobias_ntk"] = (
            [D(16, 1.5), act, D(16, 1.5), copy.deepcopy(act), D(1)],
            f"{desc}, no bias, x1 and x2 contain an all-zero row (zero variance)")
    zero_cases["zero_row_relu_bias_ntk"] = (mlp(A("Relu")), "Relu with bias, zero rows")
    zero_cases["zero_row_layernorm_bias_ntk"] = (
        [D(8, 1.5, 0.1), A("LayerNorm"), D(8), A("Relu"), D(1)],
        "LayerNorm with bias, zero rows")
    zero_cases["zero_row_layernorm_nobias_ntk"] = (
        [D(8, 1.5), A("LayerNorm"), D(8), A("Relu"), D(1)],
        "LayerNorm without bias, zero rows (variance 0 -> eps)")
    for name, (layers, desc) in zero_cases.items():
        add(name, layers, xz1, xz2, desc)
    # NT's ElementwiseNumerical gives NaN for a zero-variance row: 0/0 in
    # its conditional-variance term (nngp**2 / q11), for nngp entries of a
    # zero x1 row and for cov2 of a zero x2 row (which poisons the next
    # layer). With one Elementwise layer and the zero row in x2 only, NT is
    # finite; the two-layer versions are kept to document the NaN (skipped).
    xnz1 = _x("zero1", (4, 4)).copy()
    for fn in ELEMENTWISE_FNS:
        act = A("Elementwise", fn=fn)
        add(f"zero_row_x2_only_elementwise_{fn}_nobias_ntk",
            [D(16, 1.5), act, D(1, 1.5)], xnz1, xz2,
            f"Elementwise {fn}, no bias, one activation layer, only x2 has an all-zero row")
        add(f"zero_row_x2_only_elementwise_{fn}_2layer_nobias_ntk",
            [D(16, 1.5), act, D(16, 1.5), copy.deepcopy(act), D(1)], xnz1, xz2,
            f"Elementwise {fn}, no bias, two activation layers, only x2 has an all-zero row")
    add("zero_row_relu_nobias_sym_ntk", [D(16, 1.5), A("Relu"), D(16, 1.5), A("Relu"), D(1)],
        xz1, None, "Relu no bias, zero row, symmetric")

    # LayerNorm (dense)
    add_both("layernorm_dense", [D(8, 1.5, 0.1), A("LayerNorm", axis=[-1]), D(16, 1.2, 0.1),
                                 A("Relu"), D(1)], x1, x2,
             "Dense-LayerNorm([-1])-Dense-Relu-Dense")
    add("layernorm_dense_default_axis_sym_ntk",
        [D(8, 1.5, 0.1), A("LayerNorm"), D(16), A("Erf"), D(1)], xs, None,
        "LayerNorm default axis, symmetric")

    # Residual (dense)
    add_both("residual_identity",
             [D(16, 1.5, 0.1), {"type": "Residual", "layers": [A("Relu"), D(16, 1.2, 0.1)]},
              D(1, 1.0, 0.1)], x1, x2, "Residual(Relu, Dense) with identity shortcut")
    add_both("residual_shortcut_dense",
             [D(16, 1.5, 0.1),
              {"type": "Residual", "layers": [A("Relu"), D(16, 1.2, 0.1)],
               "shortcut": [D(16, 0.7, 0.2)]},
              D(1, 1.0, 0.1)], x1, x2, "Residual with a Dense shortcut")
    add_both("residual_nested",
             [D(16, 1.5, 0.1),
              {"type": "Residual", "layers": [
                  D(16, 1.1, 0.1),
                  {"type": "Residual", "layers": [A("Erf"), D(16, 0.9, 0.05)]},
                  A("Relu"), D(16, 1.0)]},
              D(1, 1.0, 0.1)], x1, x2, "Residual containing a Residual")
    add("residual_twice_sym_ntk",
        [D(16, 1.5, 0.1),
         {"type": "Residual", "layers": [A("Relu"), D(16, 1.2, 0.1)]},
         {"type": "Residual", "layers": [D(16, 1.0), A("Gelu"), D(16, 1.0)]},
         D(1)], xs, None, "two consecutive Residual blocks, symmetric")
    add("residual_empty_shortcut_list_ntk",
        [D(16, 1.5, 0.1),
         {"type": "Residual", "layers": [A("Relu"), D(16, 1.2)], "shortcut": []},
         D(1)], x1, x2, "Residual with shortcut [] (identity)")

    # ---------------- 2-D convolutions -----------------------------------
    c1, c2 = conv2d_x()
    cs, _ = conv2d_x(n1=3, sym=True, tag="conv2d_sym")
    for pad in ["VALID", "SAME", "CIRCULAR"]:
        add_both(f"conv2d_{pad.lower()}_flatten",
                 [C(8, (3, 3), padding=pad, w_std=1.5, b_std=0.1), A("Relu"),
                  C(8, (3, 3), padding=pad, w_std=1.3, b_std=0.05), A("Relu"),
                  A("Flatten"), D(1, 1.0, 0.1)], c1, c2,
                 f"2x Conv(3x3,{pad})+Relu, Flatten, Dense")
        add_both(f"conv2d_{pad.lower()}_gap",
                 [C(8, (3, 3), padding=pad, w_std=1.5, b_std=0.1), A("Relu"),
                  C(8, (2, 2), padding=pad, w_std=1.3, b_std=0.05), A("Relu"),
                  A("GlobalAvgPool"), D(1, 1.0, 0.1)], c1, c2,
                 f"Conv(3x3,{pad})+Relu, Conv(2x2,{pad})+Relu, GlobalAvgPool, Dense")
    for strides, tag in [((2, 2), "s22"), ((1, 2), "s12")]:
        for pad in ["VALID", "SAME", "CIRCULAR"]:
            add(f"conv2d_{pad.lower()}_{tag}_flatten_ntk",
                [C(8, (3, 3), strides=strides, padding=pad, w_std=1.5, b_std=0.1), A("Relu"),
                 A("Flatten"), D(1)], c1, c2,
                f"Conv(3x3, strides {strides}, {pad})+Relu, Flatten, Dense")
        add_both(f"conv2d_same_{tag}_gap",
                 [C(8, (3, 3), strides=strides, padding="SAME", w_std=1.5, b_std=0.1),
                  A("Erf"), A("GlobalAvgPool"), D(1)],
                 c1, c2, f"Conv(3x3, strides {strides}, SAME)+Erf, GlobalAvgPool, Dense")
    for fs, tag in [((2, 3), "f23"), ((1, 1), "f11"), ((3, 2), "f32")]:
        for pad in ["VALID", "SAME", "CIRCULAR"]:
            add(f"conv2d_{pad.lower()}_{tag}_gap_ntk",
                [C(8, fs, padding=pad, w_std=1.4, b_std=0.1), A("Relu"),
                 C(8, fs, padding=pad, w_std=1.2), A("Relu"),
                 A("GlobalAvgPool"), D(1)], c1, c2,
                f"2x Conv(filter {fs}, {pad})+Relu, GlobalAvgPool, Dense")
    add("conv2d_f23_flatten_std", [C(8, (2, 3), padding="SAME", w_std=1.4, b_std=0.1),
                                   A("Relu"), A("Flatten"), D(1)], c1, c2,
        "Conv(2x3, SAME)+Relu, Flatten, Dense [standard]")
    add("conv2d_nobias_only_flatten_ntk", [C(4, (3, 3)), A("Flatten"), D(1)], c1, c2,
        "Conv without bias or activation, Flatten, Dense")
    add_both("conv2d_gap_sym", [C(8, (3, 3), padding="SAME", w_std=1.5, b_std=0.1), A("Relu"),
                                C(8, (3, 3), padding="SAME", w_std=1.5, b_std=0.1), A("Relu"),
                                A("GlobalAvgPool"), D(2, 1.0, 0.1)], cs, None,
             "2x Conv SAME + Relu, GlobalAvgPool, Dense(2), symmetric")
    add("conv2d_flatten_sym_ntk", [C(8, (3, 3), padding="CIRCULAR", w_std=1.5, b_std=0.1),
                                   A("Abs"), A("Flatten"), D(1)], cs, None,
        "Conv CIRCULAR + Abs, Flatten, symmetric")
    for name in ["erf_abc", "gelu", "sin_abc", "sign", "leaky_relu", "abrelu"]:
        act, desc = act_cases[name]
        add(f"conv2d_{name}_gap_ntk",
            [C(6, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), act,
             C(6, (2, 2), padding="VALID", w_std=1.2, b_std=0.05), copy.deepcopy(act),
             A("GlobalAvgPool"), D(1)], c1, c2,
            f"CNN with {desc}, GlobalAvgPool (full spatial covariance)")
    add("conv2d_elementwise_silu_gap_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), A("Elementwise", fn="silu"),
         A("GlobalAvgPool"), D(1)], c1, c2, "CNN with Elementwise silu, GlobalAvgPool")
    add("conv2d_elementwise_tanh_flatten_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), A("Elementwise", fn="tanh"),
         A("Flatten"), D(1)], c1, c2, "CNN with Elementwise tanh, Flatten")
    add("conv2d_deep_gap_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), A("Relu"),
         C(6, (3, 3), padding="SAME", w_std=1.4, b_std=0.1), A("Relu"),
         C(6, (3, 3), padding="CIRCULAR", w_std=1.4, b_std=0.1), A("Relu"),
         C(6, (2, 2), strides=(2, 2), padding="VALID", w_std=1.4, b_std=0.1), A("Relu"),
         A("GlobalAvgPool"), D(6, 1.3, 0.1), A("Relu"), D(1)], c1, c2,
        "4 Conv layers, strided, then GAP, Dense-Relu-Dense head")
    add("conv2d_large_wstd_flatten_ntk",
        [C(6, (3, 3), padding="SAME", w_std=3.0, b_std=0.5), A("Relu"),
         C(6, (3, 3), padding="SAME", w_std=3.0, b_std=0.5), A("Relu"),
         A("Flatten"), D(1, 3.0)], c1, c2, "CNN with w_std=3.0")
    xcz1 = c1.copy()
    xcz1[1] = 0.0
    add("conv2d_zero_image_relu_gap_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.5), A("Relu"),
         C(6, (3, 3), padding="SAME", w_std=1.5), A("Relu"), A("GlobalAvgPool"), D(1)],
        xcz1, c2, "CNN without bias, x1 contains an all-zero image")

    # ---------------- 1-D convolutions -----------------------------------
    l1, l2 = conv1d_x()
    ls, _ = conv1d_x(n1=4, sym=True, tag="conv1d_sym")
    for pad in ["VALID", "SAME", "CIRCULAR"]:
        add_both(f"conv1d_{pad.lower()}_flatten",
                 [C(8, (3,), padding=pad, w_std=1.5, b_std=0.1), A("Relu"),
                  C(8, (3,), padding=pad, w_std=1.3, b_std=0.05), A("Relu"),
                  A("Flatten"), D(1, 1.0, 0.1)], l1, l2,
                 f"1-D: 2x Conv([3],{pad})+Relu, Flatten, Dense")
        add_both(f"conv1d_{pad.lower()}_gap",
                 [C(8, (3,), padding=pad, w_std=1.5, b_std=0.1), A("Erf"),
                  C(8, (2,), strides=(2,), padding=pad, w_std=1.3, b_std=0.05), A("Relu"),
                  A("GlobalAvgPool"), D(1, 1.0, 0.1)], l1, l2,
                 f"1-D: Conv([3],{pad})+Erf, Conv([2],stride 2,{pad})+Relu, GAP, Dense")
    add("conv1d_same_gap_sym_ntk",
        [C(8, (4,), padding="SAME", w_std=1.5, b_std=0.1), A("Gelu"),
         A("GlobalAvgPool"), D(1)], ls, None, "1-D Conv([4], SAME)+Gelu, GAP, symmetric")
    add("conv1d_f1_flatten_ntk", [C(8, (1,), w_std=1.5, b_std=0.1), A("Relu"),
                                  A("Flatten"), D(1)], l1, l2, "1-D Conv([1]) + Relu, Flatten")

    # ---------------- AvgPool --------------------------------------------
    for pad in ["VALID", "SAME", "CIRCULAR"]:
        for ws, st, tag in [((2, 2), None, "w22"), ((3, 3), (2, 2), "w33s22"),
                            ((2, 3), (1, 2), "w23s12")]:
            for head, htag in [("Flatten", "flatten"), ("GlobalAvgPool", "gap")]:
                pool = {"type": "AvgPool", "window_shape": list(ws), "padding": pad}
                if st is not None:
                    pool["strides"] = list(st)
                add(f"avgpool_{pad.lower()}_{tag}_{htag}_ntk",
                    [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1), A("Relu"), pool,
                     A(head), D(1, 1.0, 0.1)], c1, c2,
                    f"Conv+Relu, AvgPool(window {ws}, strides {st or ws}, {pad}), {head}, Dense")
    add_both("avgpool_default_flatten",
             [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1), A("Relu"),
              {"type": "AvgPool", "window_shape": [2, 2]}, A("Flatten"), D(1)], c1, c2,
             "AvgPool([2,2]) with default strides/padding, Flatten")
    add("avgpool_then_conv_gap_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1), A("Relu"),
         {"type": "AvgPool", "window_shape": [2, 2], "strides": [1, 1], "padding": "SAME"},
         C(6, (2, 2), padding="VALID", w_std=1.2, b_std=0.1), A("Relu"),
         A("GlobalAvgPool"), D(1)], c1, c2, "AvgPool between conv layers")
    add("avgpool_1d_flatten_ntk",
        [C(6, (3,), padding="SAME", w_std=1.5, b_std=0.1), A("Relu"),
         {"type": "AvgPool", "window_shape": [3], "strides": [2], "padding": "SAME"},
         A("Flatten"), D(1)], l1, l2, "1-D AvgPool([3], stride 2, SAME), Flatten")
    add("avgpool_1d_circular_gap_ntk",
        [C(6, (3,), padding="VALID", w_std=1.5, b_std=0.1), A("Erf"),
         {"type": "AvgPool", "window_shape": [2], "padding": "CIRCULAR"},
         A("GlobalAvgPool"), D(1)], l1, l2, "1-D AvgPool([2], CIRCULAR), GAP")
    add("avgpool_sym_ntk",
        [C(6, (3, 3), padding="VALID", w_std=1.5, b_std=0.1), A("Relu"),
         {"type": "AvgPool", "window_shape": [2, 2], "strides": [1, 1]},
         A("Flatten"), D(1)], cs, None, "AvgPool VALID stride 1, Flatten, symmetric")

    # ---------------- LayerNorm in CNNs ----------------------------------
    add_both("layernorm_cnn_spatial_channel",
             [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1),
              A("LayerNorm", axis=[1, 2, 3]), C(6, (3, 3), padding="SAME", w_std=1.2),
              A("Relu"), A("GlobalAvgPool"), D(1)], c1, c2,
             "Conv, LayerNorm(axis [1,2,3]), Conv+Relu, GAP, Dense")
    add("layernorm_cnn_spatial_channel_flatten_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1),
         A("LayerNorm", axis=[1, 2, 3]), C(6, (3, 3), padding="SAME", w_std=1.2),
         A("Relu"), A("Flatten"), D(1)], c1, c2,
        "Conv, LayerNorm(axis [1,2,3]), Conv+Relu, Flatten, Dense")
    add("layernorm_cnn_channel_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1),
         A("LayerNorm", axis=[-1]), C(6, (3, 3), padding="SAME", w_std=1.2),
         A("Relu"), A("GlobalAvgPool"), D(1)], c1, c2,
        "Conv, LayerNorm(axis [-1], per-position), Conv+Relu, GAP, Dense")
    add("layernorm_cnn_channel_flatten_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1),
         A("LayerNorm", axis=[3]), C(6, (3, 3), padding="SAME", w_std=1.2),
         A("Relu"), A("Flatten"), D(1)], c1, c2,
        "Conv, LayerNorm(axis [3]), Conv+Relu, Flatten, Dense")
    add("layernorm_cnn_1d_ntk",
        [C(6, (3,), padding="SAME", w_std=1.5, b_std=0.1),
         A("LayerNorm", axis=[1, 2]), C(6, (3,), padding="SAME"), A("Erf"),
         A("GlobalAvgPool"), D(1)], l1, l2, "1-D Conv, LayerNorm([1,2]), Conv+Erf, GAP")
    add("layernorm_cnn_sym_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1),
         A("LayerNorm", axis=[1, 2, 3]), C(6, (3, 3), padding="SAME", w_std=1.2),
         A("Relu"), A("GlobalAvgPool"), D(1)], cs, None, "LayerNorm CNN, symmetric")

    # ---------------- Residual in CNNs -----------------------------------
    add_both("residual_cnn",
             [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1),
              {"type": "Residual", "layers": [
                  A("Relu"), C(6, (3, 3), padding="SAME", w_std=1.3, b_std=0.05)]},
              A("Relu"), A("GlobalAvgPool"), D(1)], c1, c2,
             "Conv, Residual(Relu, Conv SAME), Relu, GAP, Dense")
    add("residual_cnn_conv_shortcut_flatten_ntk",
        [C(6, (3, 3), padding="CIRCULAR", w_std=1.5, b_std=0.1),
         {"type": "Residual",
          "layers": [A("Relu"), C(6, (3, 3), padding="CIRCULAR", w_std=1.3)],
          "shortcut": [C(6, (1, 1), w_std=0.8)]},
         A("Relu"), A("Flatten"), D(1)], c1, c2,
        "Residual with Conv(1x1) shortcut, CIRCULAR, Flatten")
    add("residual_cnn_nested_sym_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1),
         {"type": "Residual", "layers": [
             C(6, (3, 3), padding="SAME", w_std=1.2),
             {"type": "Residual", "layers": [A("Erf"), C(6, (3, 3), padding="SAME")]},
             A("Relu"), C(6, (1, 1))]},
         A("GlobalAvgPool"), D(1)], cs, None, "nested Residual in a CNN, symmetric")
    add("residual_cnn_layernorm_ntk",
        [C(6, (3, 3), padding="SAME", w_std=1.5, b_std=0.1),
         {"type": "Residual", "layers": [
             A("Relu"), C(6, (3, 3), padding="SAME", w_std=1.3)]},
         A("LayerNorm", axis=[1, 2, 3]),
         A("Flatten"), D(1)], c1, c2, "Residual followed by LayerNorm in a CNN")


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------

def compute(case):
    _, _, kernel_fn = to_stax(case["spec"])
    x1 = jnp.asarray(case["x1"])
    x2 = None if case["x2"] is None else jnp.asarray(case["x2"])
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    nngp = np.asarray(k.nngp, dtype=np.float64)
    ntk = np.asarray(k.ntk, dtype=np.float64)
    return nngp, ntk


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None, help="only cases whose name contains this")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true",
                    help="do not delete stale .npz files of cases no longer defined")
    args = ap.parse_args(argv)

    build_cases()
    if args.list:
        for n, c in CASES.items():
            print(f"{n}: {c['desc']}")
        return 0

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    index = {}
    skipped = {}
    for name, case in CASES.items():
        if args.only and args.only not in name:
            continue
        t1 = time.time()
        nngp, ntk = compute(case)
        n1 = case["x1"].shape[0]
        n2 = n1 if case["x2"] is None else case["x2"].shape[0]
        assert nngp.shape == (n1, n2) and ntk.shape == (n1, n2), (name, nngp.shape)
        if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
            skipped[name] = "neural-tangents returned non-finite values"
            print(f"SKIP {name}: non-finite (nngp finite={np.isfinite(nngp).all()}, "
                  f"ntk finite={np.isfinite(ntk).all()})")
            continue
        if case["x2"] is None:
            for kk, v in (("nngp", nngp), ("ntk", ntk)):
                asym = np.max(np.abs(v - v.T)) / max(np.max(np.abs(v)), 1e-300)
                # NT's Gauss-Hermite quadrature (ElementwiseNumerical) is not
                # symmetric in (x1, x2): entry (i, j) puts x_i on the first
                # quadrature axis. Its asymmetry can exceed 1e-4, so it is only
                # reported; the fixture keeps NT's raw (unsymmetrised) output.
                if case["rtol"] == RTOL_ANALYTIC:
                    assert asym < 1e-10, (name, kk, asym)
                if asym > 1e-10:
                    print(f"  note: {name} {kk} relative asymmetry {asym:.2e}")
        arrays = dict(spec=np.array(json.dumps(case["spec"], sort_keys=True)),
                      x1=case["x1"], nngp=nngp, ntk=ntk,
                      rtol=np.array(case["rtol"], dtype=np.float64))
        if case["x2"] is not None:
            arrays["x2"] = case["x2"]
        np.savez_compressed(OUT_DIR / f"{name}.npz", **arrays)
        index[name] = case["desc"]
        print(f"{name:50s} {nngp.shape} {time.time() - t1:6.2f}s", flush=True)

    if args.only:  # keep the other fixtures' entries
        previous = json.loads((OUT_DIR / "INDEX.json").read_text()) if (OUT_DIR / "INDEX.json").exists() else {}
        (OUT_DIR / "INDEX.json").write_text(json.dumps({**previous, **index}, indent=1) + "\n")
    else:
        if not args.keep:
            for f in OUT_DIR.glob("*.npz"):
                if f.stem not in index:
                    f.unlink()
        (OUT_DIR / "INDEX.json").write_text(json.dumps(index, indent=1) + "\n")
        skip_file = OUT_DIR / "SKIPPED.json"
        if skipped:
            skip_file.write_text(json.dumps(skipped, indent=1) + "\n")
        elif skip_file.exists():
            skip_file.unlink()
    print(f"{len(index)} fixtures written, {len(skipped)} skipped, "
          f"{time.time() - t0:.1f}s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
