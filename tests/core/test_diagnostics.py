"""Collapse diagnostics on tiny hand-made embeddings whose cosines are worked out by hand, and on random ones
against an explicit double loop over the pairs."""

from __future__ import annotations

import math

import pytest
import torch

from stepjepa.core.diagnostics import COLLAPSE_KEYS, collapse_statistics, collapse_sums


def stats(*batches: tuple[list, list]) -> dict:
    total = sum(collapse_sums(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
                for a, b in batches)
    return collapse_statistics(total)


def test_orthogonal_unit_vectors() -> None:
    """a = b = e1, e2. view_b: cos(e1, e2) = 0. Matched cosines 1, 1 (mean 1); mismatched cos(e1, e2) = cos(e2, e1)
    = 0: gap 1. Each dimension takes the values 1 and 0: mean 0.5, population std sqrt(0.5 - 0.25) = 0.5."""
    eye = [[1.0, 0.0], [0.0, 1.0]]
    assert stats((eye, eye)) == {"view_b_mean_cosine": 0.0, "view_a_dim_std": 0.5, "view_b_dim_std": 0.5,
                                 "cosine_gap": 1.0}


def test_a_collapsed_target() -> None:
    """view_b all along (3, 4) / 5 = (0.6, 0.8) whatever their length: every cosine among them 1, std 0. view_a
    e1, e2, (1, 1)/sqrt 2: matched cosines 0.6, 0.8, 1.4/sqrt 2 = 0.98995; each a_i meets the same b in its two
    mismatched pairs, so the mismatched mean equals the matched one: gap 0. view_a per dimension takes 1, 0,
    0.70711: mean 1.70711 / 3 = 0.56904, mean square 1.5 / 3 = 0.5, std sqrt(0.5 - 0.56904^2) = sqrt(0.17620)
    = 0.41976 (both dimensions alike)."""
    out = stats(([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[3.0, 4.0], [6.0, 8.0], [0.3, 0.4]]))
    assert out["view_b_mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert out["view_b_dim_std"] == pytest.approx(0.0, abs=1e-3)  # sqrt of a float32 rounding residue
    assert out["cosine_gap"] == pytest.approx(0.0, abs=1e-6)
    assert out["view_a_dim_std"] == pytest.approx(0.41976, abs=1e-5)


def test_batches_add_and_mismatched_pairs_stay_within_their_batch() -> None:
    """Batch 1: a = b = e1, e2 (matched 1, 1; mismatched 0, 0). Batch 2: one pair a = e1, b = -e1 (matched -1, no
    mismatched pair). Window: matched mean (1 + 1 - 1) / 3 = 1/3, mismatched 0 / 2 = 0, gap 1/3 (the cross-batch
    pairs such as (e1 of batch 2, e1 of batch 1) do not count). view_b e1, e2, -e1: cosines 0, -1, 0 -> -1/3."""
    eye = [[1.0, 0.0], [0.0, 1.0]]
    out = stats((eye, eye), ([[1.0, 0.0]], [[-1.0, 0.0]]))
    assert out["cosine_gap"] == pytest.approx(1 / 3)
    assert out["view_b_mean_cosine"] == pytest.approx(-1 / 3)


def test_too_few_pairs_give_none() -> None:
    assert stats(([[1.0, 0.0]], [[0.0, 1.0]])) == {key: None for key in COLLAPSE_KEYS}
    # Two batches of one pair each: two pairs for the view statistics, but no mismatched pair for the gap.
    out = stats(([[1.0, 0.0]], [[1.0, 0.0]]), ([[0.0, 1.0]], [[0.0, 1.0]]))
    assert out["cosine_gap"] is None and out["view_b_mean_cosine"] == 0.0


def test_random_embeddings_match_an_explicit_loop() -> None:
    """Two batches of random embeddings (5 and 3 pairs, D = 6, some far from unit length): each statistic
    against a double loop of cosines and torch's population std of the normalised rows."""
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 6, generator=gen) * 3, torch.randn(n, 6, generator=gen) + 0.5) for n in (5, 3)]
    out = collapse_statistics(sum(collapse_sums(a, b) for a, b in batches))
    cos = torch.nn.functional.cosine_similarity
    a_all = torch.cat([a for a, _ in batches])
    b_all = torch.cat([b for _, b in batches])
    off = [float(cos(b_all[i], b_all[j], dim=0)) for i in range(8) for j in range(8) if i != j]
    matched = [float(cos(a[i], b[i], dim=0)) for a, b in batches for i in range(len(a))]
    mismatched = [float(cos(a[i], b[j], dim=0)) for a, b in batches for i in range(len(a)) for j in range(len(a))
                  if i != j]
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    assert out["view_b_mean_cosine"] == pytest.approx(sum(off) / len(off), abs=1e-5)
    assert out["cosine_gap"] == pytest.approx(sum(matched) / 8 - sum(mismatched) / (5 * 4 + 3 * 2), abs=1e-5)
    assert out["view_a_dim_std"] == pytest.approx(float(unit(a_all).std(dim=0, correction=0).mean()), abs=1e-5)
    assert out["view_b_dim_std"] == pytest.approx(float(unit(b_all).std(dim=0, correction=0).mean()), abs=1e-5)
    assert not math.isclose(out["view_a_dim_std"], out["view_b_dim_std"])


def test_bf16_embeddings_are_summed_in_float32() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.bfloat16)
    sums = collapse_sums(a, a)
    assert sums.dtype == torch.float32 and sums.shape == (4 + 4 * 2,)
    # Inside the trainer's autocast region the sums stay float32 and equal those computed outside it.
    gen = torch.Generator().manual_seed(1)
    view_a, view_b = torch.randn(6, 16, generator=gen), torch.randn(6, 16, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = collapse_sums(view_a, view_b)
    assert inside.dtype == torch.float32 and torch.equal(inside, collapse_sums(view_a, view_b))
