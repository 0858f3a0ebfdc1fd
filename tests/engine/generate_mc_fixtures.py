"""Fixtures pinning the finite networks and empirical kernels to neural-tangents.

Run with the oracle venv (neural-tangents 0.6.5 + jax, x64)::

    /tmp/nt/bin/python tests/engine/generate_mc_fixtures.py

For each case it initializes the stax network with ``init_fn``, and writes
``tests/fixtures/monte_carlo/<case>.npz`` with ``spec`` (0-d str, the JSON architecture), ``x1``,
``x2``, the parameter leaves ``param_0, param_1, ...`` in ``jax.tree_util.tree_leaves`` order and
stax layouts (Dense W (in, out), Conv W (*filter, in, out), biases (1, ..., out)), ``out1`` =
apply_fn(params, x1), and the empirical kernels of that one network (``empirical_nngp_fn`` /
``empirical_ntk_fn`` with the default trace_axes=(-1,)): ``nngp11``, ``ntk11`` = K(x1, x1) and
``nngp12``, ``ntk12`` = K(x1, x2). ``tests/engine/test_monte_carlo.py`` loads the same weights into
``ntk.engine.networks`` and compares. Not a pytest module: it needs jax.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import numpy as np  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import neural_tangents as nt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from nt_bridge import to_stax  # noqa: E402  (the translation the kernel fixtures and the NT benchmark use)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spec_builders import A, C, D  # noqa: E402

OUT_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "monte_carlo"


CASES = {
    "mlp_relu": ([D(6, w_std=1.4, b_std=0.3), A("Relu"), D(5, w_std=0.9, b_std=0.1), A("Erf", a=1.2, b=0.7, c=0.1),
                  D(3, b_std=0.2)], (4,)),
    "mlp_acts": ([D(6, b_std=0.3), A("LeakyRelu", alpha=0.2), D(5), A("Gelu"), D(5, b_std=0.1),
                  A("Sin", a=1.1, b=0.8, c=0.3), D(4), A("Elementwise", fn="softplus"), D(4), A("ABRelu", a=-0.4, b=1.3),
                  D(4), A("Elementwise", fn="elu"), D(4), A("Gelu", approximate=True), D(4), A("Abs"), D(2)], (3,)),
    "mlp_layernorm_residual": ([D(6, b_std=0.3), A("LayerNorm"),
                                A("Residual", layers=[D(6, w_std=1.2), A("Relu"), D(6, b_std=0.1)]),
                                A("Residual", layers=[D(6), A("Elementwise", fn="tanh")], shortcut=[D(6, w_std=0.5)]),
                                D(3)], (4,)),
    "cnn2d_same_strided": ([C(4, [3, 2], strides=[2, 1], padding="SAME", w_std=1.3, b_std=0.2), A("Relu"),
                            C(3, [2, 3], padding="CIRCULAR", b_std=0.3), A("Elementwise", fn="silu"),
                            A("AvgPool", window_shape=[2, 2], padding="SAME"),
                            C(3, [3, 3], strides=[1, 2], padding="CIRCULAR"), A("Elementwise", fn="sigmoid"),
                            A("AvgPool", window_shape=[3, 2], strides=[2, 1], padding="CIRCULAR"),
                            D(3), A("LayerNorm", axis=[-1, 1]), A("Flatten"), D(2, b_std=0.5)], (6, 5, 2)),
    "cnn2d_gap_residual": ([C(4, [3, 3], padding="SAME", b_std=0.1), A("Relu"),
                            A("Residual", layers=[C(4, [2, 2], padding="SAME"), A("Relu"), C(4, [3, 3], padding="SAME")]),
                            A("AvgPool", window_shape=[2, 2], strides=[2, 2]),
                            C(5, [2, 2], padding="VALID", w_std=1.5), A("Erf"), A("GlobalAvgPool"), D(3, b_std=0.1)],
                           (6, 6, 3)),
    "cnn1d": ([C(4, [3], strides=[2], padding="VALID", b_std=0.2), A("Elementwise", fn="tanh"),
               C(3, [4], strides=[3], padding="SAME"), A("Relu"), C(3, [2], padding="CIRCULAR", b_std=0.1),
               A("Sign"), D(3), A("Flatten"), D(2)], (11, 2)),
}


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (layers, shape) in CASES.items():
        for param in ("ntk", "standard"):
            spec = {"parameterization": param, "layers": layers}
            init_fn, apply_fn, _ = to_stax(spec)
            x1 = rng.standard_normal((4,) + shape)
            x2 = rng.standard_normal((3,) + shape)
            _, params = init_fn(jax.random.PRNGKey(len(name)), x1.shape)
            leaves = jax.tree_util.tree_leaves(params)
            nngp = nt.empirical_nngp_fn(apply_fn)
            ntk = nt.empirical_ntk_fn(apply_fn, implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION)
            out = dict(spec=np.array(json.dumps(spec)), x1=x1, x2=x2,
                       out1=np.asarray(apply_fn(params, x1)),
                       nngp11=np.asarray(nngp(x1, None, params)), ntk11=np.asarray(ntk(x1, None, params)),
                       nngp12=np.asarray(nngp(x1, x2, params)), ntk12=np.asarray(ntk(x1, x2, params)))
            for i, leaf in enumerate(leaves):
                out[f"param_{i}"] = np.asarray(leaf, dtype=np.float64)
            np.savez(OUT_DIR / f"{name}_{param}.npz", **out)
            print(name, param, len(leaves), "leaves", out["ntk11"].shape)


if __name__ == "__main__":
    main()
