"""predict at scale: the Cholesky factor takes the place of its matrix, λ_max by Lanczos, and the
t = ∞ solve reads the factor without copying it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntk.engine import predict as P


def kernel(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x @ x.T / 8 + torch.exp(-torch.cdist(x, x))  # exactly symmetric, positive definite


@pytest.mark.parametrize("kernel_mode", ["ntk", "nngp"])
def test_a_factorization_in_place_is_the_ordinary_one_in_the_matrix_own_memory(kernel_mode):
    g = kernel(300)
    name = P.dynamics_kernel(kernel_mode)
    ordinary = P.factorize({name: g}, kernel_mode, diag_reg=1e-4)
    matrix = g.clone()
    in_place = P.factorize({name: matrix}, kernel_mode, diag_reg=1e-4, overwrite=True)
    assert in_place.cholesky.data_ptr() == matrix.data_ptr()
    assert in_place.epsilon == ordinary.epsilon
    torch.testing.assert_close(in_place.cholesky, ordinary.cholesky, rtol=0, atol=1e-13)
    assert bool((torch.triu(in_place.cholesky, 1) == 0).all())


def test_an_in_place_factorization_that_fails_says_so():
    g = kernel(50)
    g[7, 7] = -1.0
    with pytest.raises(P.NotPositiveDefinite, match="leading minor"):
        P.factorize(g, "ntk", overwrite=True)


def test_the_mean_at_infinite_time_is_a_direct_solve():
    g, y = kernel(200, seed=1), torch.randn(200, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    td = kernel(230, seed=1)[200:, :200]  # test rows of the same kernel
    f = P.factorize(g.clone(), "ntk", diag_reg=1e-3, overwrite=True)
    mean = P.predict(f, y, {"ntk": td}, kernel="ntk", t=None, compute_cov=False).mean
    direct = td.numpy() @ np.linalg.solve(g.numpy() + f.epsilon * np.eye(200), y.numpy())
    np.testing.assert_allclose(mean.numpy(), direct, rtol=1e-9, atol=1e-12)


def test_the_largest_eigenvalue_by_lanczos_is_the_one_of_all_eigenvalues(monkeypatch):
    g = kernel(400, seed=3)
    full = float(torch.linalg.eigvalsh(g)[-1])
    monkeypatch.setattr(P, "LANCZOS_FROM", 100)
    assert P._largest_eigenvalue(g) == pytest.approx(full, rel=1e-13)
    assert P.max_learning_rate(g, 10) == pytest.approx(2 * 10 / full, rel=1e-13)
