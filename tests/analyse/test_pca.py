"""PCA with torch.pca_lowrank: recovers planted structure, agrees with an exact SVD, is deterministic."""
from __future__ import annotations

import torch

from explorer.analyse.pca import pca


def _line_in_high_dimensions(n: int = 200, d: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-3, 3, n)
    direction = torch.randn(d, generator=g)
    x = t[:, None] * direction[None, :] + 0.05 * torch.randn(n, d, generator=g) + 5.0   # offset: centring matters
    return x, t


def test_first_component_recovers_a_planted_line():
    x, t = _line_in_high_dimensions()
    proj = pca(x)
    assert proj.coords.shape == (200, 2) and proj.coords.dtype == torch.float32
    assert proj.explained[0] > 0.95
    corr = torch.corrcoef(torch.stack([proj.coords[:, 0], t]))[0, 1]
    assert abs(float(corr)) > 0.999


def test_explained_variance_matches_an_exact_svd():
    x = torch.randn(120, 32, generator=torch.Generator().manual_seed(1)) * torch.linspace(3, 0.1, 32)
    proj = pca(x, k=2)
    c = x - x.mean(0)
    s = torch.linalg.svdvals(c)
    exact = s[:2] ** 2 / (s ** 2).sum()
    assert torch.allclose(proj.explained, exact, atol=2e-3)


def test_same_input_gives_the_same_picture_with_a_fixed_sign():
    x, _ = _line_in_high_dimensions(seed=3)
    a, b = pca(x), pca(x.clone())
    assert torch.equal(a.coords, b.coords)
    for k in range(2):
        col = a.coords[:, k]
        assert col[col.abs().argmax()] > 0


def test_excluded_positions_are_left_out_of_the_fit():
    x, _ = _line_in_high_dimensions(n=50)
    x[0] = 1e4                                  # a "massive activation" token
    with_outlier = pca(x)
    without = pca(x, exclude=[0])
    assert without.positions == list(range(1, 50)) and without.coords.shape == (49, 2)
    assert with_outlier.explained[0] > 0.99     # the outlier is the whole first component
    assert without.explained[0] > 0.9           # the line comes back once it is left out


def test_degenerate_inputs_do_not_crash():
    one = pca(torch.randn(1, 8))
    assert one.coords.shape == (1, 2) and torch.all(one.coords == 0)
    same = pca(torch.ones(5, 8))
    assert torch.all(same.coords == 0) and same.total_variance == 0.0
    narrow = pca(torch.randn(10, 1))
    assert narrow.coords.shape == (10, 2) and torch.all(narrow.coords[:, 1] == 0)
