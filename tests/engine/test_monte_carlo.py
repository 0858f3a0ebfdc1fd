"""Finite networks (ntk.engine.networks) and Monte Carlo kernels (ntk.engine.monte_carlo).

Fast tests pin the finite networks to neural-tangents (same weights -> same outputs and empirical
kernels, from fixtures written by generate_mc_fixtures.py), check the structured NTK against the
plain Jacobian contraction, the statistics of the outputs over seeds, symmetry/PSD-ness,
reproducibility and validation. Slow tests (``-m slow``) measure convergence to the analytic
kernel as width grows; run ``pytest -m slow -s`` to see the figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ntk.engine import monte_carlo as mc
from ntk.engine.kernel import NonFiniteKernel, kernel_fn
from ntk.engine.monte_carlo import (empirical_kernels, empirical_kernels_autodiff, monte_carlo_kernel_fn,
                                        sample_seed)
from ntk.engine.networks import Conv, build_network
from ntk.spec.architecture import SpecError
from spec_builders import A, C, D

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "monte_carlo"


def arch(layers, parameterization="ntk"):
    return {"parameterization": parameterization, "layers": layers}


def fc(width, out=1, parameterization="ntk"):
    return arch([D(width, w_std=1.5, b_std=0.1), A("Relu"), D(width, w_std=1.5, b_std=0.1), A("Relu"),
                 D(out, w_std=1.5, b_std=0.1)], parameterization)


def cnn(width, out=1, parameterization="ntk"):
    return arch([C(width, [3, 3], padding="SAME", w_std=1.5, b_std=0.1), A("Relu"),
                 C(width, [3, 3], padding="SAME", w_std=1.5, b_std=0.1), A("Relu"),
                 A("GlobalAvgPool"), D(out, w_std=1.5, b_std=0.1)], parameterization)


# Small networks covering every layer type, padding and stride: (spec, one point's shape).
ZOO = {
    "mlp": (arch([D(7, w_std=1.3, b_std=0.2), A("Relu"), D(5, b_std=0.1), A("Erf", a=1.2, b=0.7, c=0.1),
                  D(3, b_std=0.1)]), (5,)),
    "cnn2d": (arch([C(4, [3, 2], strides=[2, 1], padding="SAME", w_std=1.3, b_std=0.2), A("Erf"),
                    C(5, [2, 3], padding="CIRCULAR", b_std=0.3), A("Gelu"),
                    A("AvgPool", window_shape=[2, 2], padding="SAME"), D(3), A("LayerNorm", axis=[-1, 1]),
                    A("Residual", layers=[C(3, [3, 3], padding="SAME"), A("Relu")]),
                    A("Flatten"), D(2, b_std=0.5)]), (5, 4, 3)),
    "cnn1d": (arch([C(4, [3], strides=[2], b_std=0.2), A("Elementwise", fn="tanh"),
                    C(3, [2], strides=[3], padding="CIRCULAR"), A("GlobalAvgPool"), D(2)]), (9, 2)),
}


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def rel(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# -- the finite network is neural-tangents' network ------------------------------------------


def _load_nt_weights(net, z):
    leaves = [z[f"param_{i}"] for i in range(sum(k.startswith("param_") for k in z.files))]
    slots = [(m, name) for m in net.affine_layers() for name in ("weight", "bias") if getattr(m, name) is not None]
    assert len(slots) == len(leaves)
    with torch.no_grad():
        for (module, name), leaf in zip(slots, leaves):
            value = torch.from_numpy(leaf)
            if name == "bias":
                value = value.reshape(-1)                       # (1, ..., out) -> (out,)
            elif isinstance(module, Conv):
                value = value.movedim((-1, -2), (0, 1))         # (*filter, in, out) -> (out, in, *filter)
            getattr(module, name).copy_(value)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.npz")), ids=lambda p: p.stem)
def test_same_weights_same_outputs_and_empirical_kernels_as_neural_tangents(path):
    z = np.load(path)
    x1, x2 = torch.from_numpy(z["x1"]), torch.from_numpy(z["x2"])
    net = build_network(json.loads(str(z["spec"])), x1.shape[1:], seed=0)
    _load_nt_weights(net, z)
    with torch.no_grad():
        assert rel(net(x1), z["out1"]) < 1e-12
    k11, k12 = empirical_kernels(net, x1), empirical_kernels(net, x1, x2)
    for name in ("nngp", "ntk"):
        assert rel(k11[name], z[f"{name}11"]) < 1e-12
        assert rel(k12[name], z[f"{name}12"]) < 1e-12


def test_fixtures_present():
    assert len(list(FIXTURES.glob("*.npz"))) >= 12


# -- structured NTK = Jacobian contraction ---------------------------------------------------


@pytest.mark.parametrize("route", [None, "gram", "grads"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("case", sorted(ZOO))
def test_structured_kernels_equal_jacobian_contraction(case, parameterization, route):
    spec, shape = ZOO[case]
    net = build_network(dict(spec, parameterization=parameterization), shape, seed=3)
    x1, x2 = randn(4, *shape, seed=1), randn(3, *shape, seed=2)
    for a, b in ((x1, None), (x1, x2)):
        ref = empirical_kernels_autodiff(net, a, b)
        for batch_size in (None, 2):
            got = empirical_kernels(net, a, b, batch_size=batch_size, route=route)
            for name in ("nngp", "ntk"):
                assert rel(got[name], ref[name]) < 1e-12, (name, batch_size)
            if b is None:
                assert torch.equal(got["ntk"], got["ntk"].T)


# -- the network module ----------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(ZOO))
def test_forward_shapes_and_parameters(case):
    spec, shape = ZOO[case]
    net = build_network(spec, shape, seed=0)
    k = spec["layers"][-1]["out_dim"]
    assert net.output_shape == (k,)
    out = net(randn(6, *shape))
    assert out.shape == (6, k) and out.dtype == torch.float64
    params = list(net.parameters())
    assert params and all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in params)
    with pytest.raises(ValueError):
        net(randn(6, *shape[:-1], shape[-1] + 1))


def test_parameter_shapes_and_init_scales():
    net = build_network(arch([D(300, w_std=2.0, b_std=0.5), A("Relu"), D(1)], "standard"), (200,), seed=0)
    first = net.affine_layers()[0]
    assert first.weight.shape == (200, 300) and first.bias.shape == (300,)
    assert abs(first.weight.std().item() - 2.0 / math.sqrt(200)) < 0.01 * 2.0 / math.sqrt(200) * 3
    assert abs(first.bias.std().item() - 0.5) < 0.05
    ntk = build_network(arch([D(300, w_std=2.0, b_std=0.5), A("Relu"), D(1)]), (200,), seed=0)
    assert abs(ntk.affine_layers()[0].weight.std().item() - 1.0) < 0.01
    assert ntk.affine_layers()[0].w_scale == pytest.approx(2.0 / math.sqrt(200))
    conv = build_network(arch([C(8, [3, 2], w_std=1.5), A("Flatten"), D(1)]), (5, 5, 4), seed=0)
    layer = conv.affine_layers()[0]
    assert layer.weight.shape == (8, 4, 3, 2) and layer.bias is None and layer.fan_in == 24


@pytest.mark.parametrize("case", sorted(ZOO))
def test_parameterizations_are_the_same_function_at_init(case):
    """Standard draws W·w_std/√n where NTK multiplies by it in the forward: same seed, same f."""
    spec, shape = ZOO[case]
    x = randn(5, *shape)
    a = build_network(dict(spec, parameterization="ntk"), shape, seed=7)
    b = build_network(dict(spec, parameterization="standard"), shape, seed=7)
    with torch.no_grad():
        assert rel(a(x), b(x)) < 1e-12
    ka, kb = empirical_kernels(a, x), empirical_kernels(b, x)
    assert rel(ka["nngp"], kb["nngp"]) < 1e-12
    assert rel(ka["ntk"], kb["ntk"]) > 1e-3


def test_forward_is_pure_and_trainable():
    spec, shape = ZOO["cnn2d"]
    net = build_network(spec, shape, seed=1)
    x, y = randn(8, *shape), randn(8, 2, seed=5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first, second = net(x), net(x)
    assert torch.equal(first, second)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    params = {k: v.detach() for k, v in net.named_parameters()}
    assert torch.equal(torch.func.functional_call(net, params, (x,)), first.detach())
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_same_seed_same_network_any_dtype():
    spec, shape = ZOO["mlp"]
    a = build_network(spec, shape, seed=11)
    b = build_network(spec, shape, seed=11)
    c = build_network(spec, shape, seed=12)
    f = build_network(spec, shape, seed=11, dtype=torch.float32)
    g = torch.Generator().manual_seed(11)
    h = build_network(spec, shape, generator=g)
    for (name, p), q, r, s, t in zip(a.named_parameters(), b.parameters(), c.parameters(), f.parameters(),
                                     h.parameters()):
        assert torch.equal(p, q) and torch.equal(p, t) and not torch.equal(p, r), name
        assert s.dtype == torch.float32 and torch.equal(p.float(), s)


def test_output_second_moments_match_the_analytic_nngp():
    """Over many seeds and outputs, E[f(x) f(x')] of the finite network is the NNGP (roughly)."""
    spec = fc(256, out=16)
    x = randn(4, 6)
    ref = kernel_fn(spec, x)["nngp"]
    outs = []
    with torch.no_grad():
        for seed in range(60):
            outs.append(build_network(spec, (6,), seed=seed)(x))
    f = torch.stack(outs)                                   # (seeds, N, k)
    moment = torch.einsum("snk,smk->nm", f, f) / (f.shape[0] * f.shape[2])
    assert f.mean().abs() < 0.1 * ref.diagonal().mean().sqrt()
    assert rel(moment.diagonal(), ref.diagonal()) < 0.15
    assert rel(moment, ref) < 0.15


def test_cnn_output_variance_matches_the_analytic_nngp_diagonal():
    spec = cnn(32, out=16)
    x = randn(3, 5, 5, 2)
    ref = kernel_fn(spec, x)["nngp"].diagonal()
    with torch.no_grad():
        f = torch.stack([build_network(spec, (5, 5, 2), seed=s)(x) for s in range(40)])
    assert rel(f.square().mean(dim=(0, 2)), ref) < 0.15


# -- monte_carlo_kernel_fn -------------------------------------------------------------------


def test_symmetric_and_positive_semidefinite():
    spec, shape = ZOO["cnn2d"]
    x = randn(10, *shape)
    out = monte_carlo_kernel_fn(spec, x, samples=4, seed=3)
    assert set(out) == {"nngp", "ntk", "nngp_stderr", "ntk_stderr"}
    for name in ("nngp", "ntk"):
        k = out[name]
        assert k.shape == (10, 10) and k.dtype == torch.float64
        assert torch.equal(k, k.T)
        eig = torch.linalg.eigvalsh(k)
        assert eig.min() > -1e-10 * eig.max()
        se = out[name + "_stderr"]
        assert se.shape == (10, 10) and (se >= 0).all() and torch.isfinite(se).all()


def test_reproducible_by_seed_and_blocks_agree():
    spec, shape = ZOO["cnn1d"]
    x1, x2 = randn(6, *shape, seed=1), randn(4, *shape, seed=2)
    a = monte_carlo_kernel_fn(spec, x1, x2, samples=3, seed=5)
    b = monte_carlo_kernel_fn(spec, x1, x2, samples=3, seed=5)
    c = monte_carlo_kernel_fn(spec, x1, x2, samples=3, seed=6)
    for name in a:
        assert torch.equal(a[name], b[name])
    assert not torch.allclose(a["ntk"], c["ntk"])
    # Any block of the matrix is the kernel of the blocks' points (tiles compose), whatever batch.
    whole = monte_carlo_kernel_fn(spec, torch.cat([x1, x2]), samples=3, seed=5, batch_size=4)
    for name in ("nngp", "ntk", "nngp_stderr", "ntk_stderr"):
        assert rel(whole[name][:6, 6:], a[name]) < 1e-12
    sub = monte_carlo_kernel_fn(spec, x1[2:5], samples=3, seed=5)
    assert rel(whole["ntk"][2:5, 2:5], sub["ntk"]) < 1e-12


def test_mean_is_the_average_of_the_sampled_networks():
    spec, shape = ZOO["mlp"]
    x = randn(5, *shape)
    out = monte_carlo_kernel_fn(spec, x, samples=3, seed=9)
    each = [empirical_kernels(build_network(spec, shape, seed=sample_seed(9, i)), x) for i in range(3)]
    for name in ("nngp", "ntk"):
        stack = torch.stack([e[name] for e in each])
        assert rel(out[name], stack.mean(0)) < 1e-12
        assert rel(out[name + "_stderr"], stack.std(0) / math.sqrt(3)) < 1e-10


def test_float32():
    spec, shape = ZOO["mlp"]
    x = randn(5, *shape)
    a = monte_carlo_kernel_fn(spec, x, samples=2, dtype=torch.float32)
    b = monte_carlo_kernel_fn(spec, x, samples=2)
    assert a["ntk"].dtype == torch.float32
    assert rel(a["ntk"].double(), b["ntk"]) < 1e-4


def test_get_selects_and_single_sample_has_no_stderr():
    spec, shape = ZOO["mlp"]
    out = monte_carlo_kernel_fn(spec, randn(3, *shape), get=["ntk"], samples=1)
    assert set(out) == {"ntk", "ntk_stderr"}
    assert torch.isnan(out["ntk_stderr"]).all()
    out = monte_carlo_kernel_fn(spec, randn(3, *shape), get=("nngp",), samples=2)
    assert set(out) == {"nngp", "nngp_stderr"}


@pytest.mark.parametrize("samples", [0, -1, True, 1.5, "3", mc.MAX_SAMPLES + 1])
def test_samples_validated(samples):
    spec, shape = ZOO["mlp"]
    with pytest.raises(SpecError) as e:
        monte_carlo_kernel_fn(spec, randn(3, *shape), samples=samples)
    assert e.value.errors[0]["path"] == "samples"


def test_other_arguments_validated():
    spec, shape = ZOO["mlp"]
    x = randn(3, *shape)
    with pytest.raises(SpecError) as e:
        monte_carlo_kernel_fn(spec, x, get=("ntk", "cov"), samples=1)
    assert e.value.errors[0]["path"] == "get"
    with pytest.raises(SpecError) as e:
        monte_carlo_kernel_fn(spec, x, seed=-1, samples=1)
    assert e.value.errors[0]["path"] == "seed"
    with pytest.raises(SpecError):
        monte_carlo_kernel_fn(spec, x, randn(2, 4), samples=1)
    with pytest.raises(SpecError):
        monte_carlo_kernel_fn(ZOO["cnn2d"][0], x, samples=1)


def test_overflow_is_an_error_not_nan():
    spec = arch([D(8, w_std=1000.0)] + [A("Relu"), D(8, w_std=1000.0)] * 20)
    with pytest.raises(NonFiniteKernel):
        monte_carlo_kernel_fn(spec, randn(3, 4), samples=2, dtype=torch.float32)


def test_progress_reports_and_can_cancel():
    spec, shape = ZOO["mlp"]
    seen = []
    monte_carlo_kernel_fn(spec, randn(3, *shape), samples=3, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        monte_carlo_kernel_fn(spec, randn(3, *shape), samples=3, progress=cancel)


def test_sample_seeds_distinct_and_stable():
    seeds = {sample_seed(s, i) for s in range(20) for i in range(50)}
    assert len(seeds) == 1000
    assert sample_seed(0, 0) == sample_seed(0, 0) and 0 <= sample_seed(123, 4) < 2**63


# -- convergence to the analytic kernel (slow) -----------------------------------------------

WIDTHS = (64, 256, 1024)


def _convergence(make, x, parameterization, samples):
    """Per width and kernel: relative Frobenius errors of the MC mean and of one network, and the
    fraction of entries where the analytic kernel is within 3 standard errors.

    The NNGP of one network concentrates only when its readout is wide too (it averages over the
    k outputs), so the NNGP is sampled with k = width outputs; the NTK concentrates per output,
    and is sampled with k = 1. The analytic kernels do not depend on k.
    """
    rows = {}
    for width in WIDTHS:
        ref = kernel_fn(make(width, 1, parameterization), x)
        for name, out_dim in (("nngp", width), ("ntk", 1)):
            est = monte_carlo_kernel_fn(make(width, out_dim, parameterization), x, get=(name,),
                                        samples=samples, seed=0)
            diff, se, norm = est[name] - ref[name], est[name + "_stderr"], ref[name].norm()
            # mean over networks of ‖K̂_i − K‖² = ‖mean − K‖² + (S − 1)·S·‖stderr‖² / S
            single = (math.sqrt(diff.norm() ** 2 + (samples - 1) * se.norm() ** 2) / norm).item()
            rows[name, width] = dict(err=(diff.norm() / norm).item(), single=single,
                                     se=(se.norm() / norm).item(),
                                     within=(diff.abs() <= 3 * se).double().mean().item())
    for (name, width), r in sorted(rows.items()):
        print(f"{parameterization:8s} {name:4s} width {width:5d}: MC-mean error {r['err']:.4f} "
              f"(stderr {r['se']:.4f}), one-network error {r['single']:.4f}, within 3 se {r['within']:.2f}")
    return rows


def _check_convergence(rows):
    for name in ("nngp", "ntk"):
        single = [rows[name, w]["single"] for w in WIDTHS]
        # One network's error falls like 1/sqrt(width), i.e. halves per 4x width. Its estimate from
        # S networks is heavy-tailed (±20-30% at these S), so assert a weaker fall per step.
        assert single[1] < 0.85 * single[0] and single[2] < 0.85 * single[1], (name, single)
        assert single[2] < 0.5 * single[0], (name, single)
        for w in WIDTHS:
            # The MC mean's error is sampling noise, not bias: a few standard errors at most.
            assert rows[name, w]["err"] < 4 * rows[name, w]["se"] + 1e-3, (name, w, rows[name, w])
        assert rows[name, 1024]["within"] >= 0.9, (name, rows[name, 1024])


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_fc_relu_converges_to_the_analytic_kernel(parameterization):
    x = randn(8, 8, seed=1)
    _check_convergence(_convergence(fc, x, parameterization, samples=60))


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_cnn_global_avg_pool_converges_to_the_analytic_kernel(parameterization):
    x = randn(6, 4, 4, 2, seed=1)
    _check_convergence(_convergence(cnn, x, parameterization, samples=40))
