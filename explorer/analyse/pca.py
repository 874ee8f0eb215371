"""2-D pictures of token vectors: PCA with torch's own randomized solver (torch.pca_lowrank).

Why not sklearn: torch is already here and pca_lowrank handles (T, d) at any size in a few ms.
Why the sign fix: PCA components have no inherent sign, so without one the same prompt could
come out mirrored between two runs or two layers, which reads as a difference when there is none.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Projection:
    """Token vectors projected on their top principal components."""
    coords: torch.Tensor          # (N, k) float32, one row per kept position
    positions: list[int]          # token position of each row (some may be left out)
    explained: torch.Tensor       # (k,) float32, share of the total variance each component carries
    total_variance: float         # sum of per-dimension variances of the kept vectors


def pca(vectors: torch.Tensor, k: int = 2, exclude: Sequence[int] = (), seed: int = 0,
        niter: int = 6) -> Projection:
    """Project (T, d) vectors on their top-k principal components (centred).

    exclude: positions to leave out before fitting, e.g. the first token, whose norm in many
    models is far larger than the rest and would otherwise be the whole first component.
    Deterministic for a given input: the randomized solver runs under a fixed seed, and each
    component's sign is chosen so that its largest coordinate is positive.
    """
    if vectors.dim() != 2:
        raise ValueError(f"expected (T, d) vectors, got shape {tuple(vectors.shape)}")
    t = vectors.shape[0]
    drop = {p % t for p in exclude} if t else set()
    positions = [i for i in range(t) if i not in drop]
    x = vectors[positions].float() if len(positions) < t else vectors.float()   # (N, d)
    n, d = x.shape
    coords = torch.zeros(n, k, dtype=torch.float32)
    explained = torch.zeros(k, dtype=torch.float32)
    centred = x - x.mean(0, keepdim=True) if n else x
    total = float(centred.pow(2).sum() / max(n - 1, 1)) if n else 0.0
    q = min(k, n, d)
    if n < 2 or q == 0 or total == 0.0:
        return Projection(coords, positions, explained, total)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, v = torch.pca_lowrank(centred, q=min(q + 4, n, d), center=False, niter=niter)
    proj = centred @ v[:, :q]                                             # (N, q)
    flip = torch.sign(proj.gather(0, proj.abs().argmax(0, keepdim=True)))  # (1, q)
    flip[flip == 0] = 1
    coords[:, :q] = proj * flip
    explained[:q] = (s[:q].pow(2) / max(n - 1, 1)) / total
    return Projection(coords, positions, explained, total)


__all__ = ["Projection", "pca"]
