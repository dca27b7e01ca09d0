"""The loss formulas against arithmetic worked by hand (the oracle tests call the same functions, so they cannot
catch a wrong formula)."""

from __future__ import annotations

import math

import pytest
import torch

from stepjepa.core.losses import INFONCE_TEMPERATURE, jepa_loss, lm_loss
from stepjepa.core.tokenization import IGNORE_INDEX


def test_orthogonal_unit_pair() -> None:
    """a = (1, 0), b = (0, 1): cos 0 -> cosine loss 1; ||a - b|| = sqrt(1 + 1) = sqrt 2; mean((1, -1)^2) = 1."""
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert float(jepa_loss(a, b, "cosine")) == pytest.approx(1.0)
    assert float(jepa_loss(a, b, "l2")) == pytest.approx(math.sqrt(2))
    assert float(jepa_loss(a, b, "mse")) == pytest.approx(1.0)


def test_averaged_over_pairs() -> None:
    """Two pairs: ((3, 4), (3, 4)) and ((1, 0), (-1, 0)).

    cosine: 1 - 1 = 0 and 1 - (-1) = 2 -> mean 1.
    l2: 0 and ||(2, 0)|| = 2 -> mean 1 (not squared: a squared L2 would give 2).
    mse: squared differences 0, 0, 4, 0 over 4 entries -> 1.
    """
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
    assert float(jepa_loss(a, b, "cosine")) == pytest.approx(1.0)
    assert float(jepa_loss(a, b, "l2")) == pytest.approx(1.0)
    assert float(jepa_loss(a, b, "mse")) == pytest.approx(1.0)


def test_infonce_two_by_two() -> None:
    """a = b = ((1, 0), (0, 1)): cosine matrix I, logits I / 0.07. Each row's cross-entropy:
    -log(e^(1/0.07) / (e^(1/0.07) + e^0)) = log(1 + e^(-1/0.07)) = log(1 + e^-14.2857) = 6.2e-7.
    With b's rows swapped, the right partner scores 0 and the wrong one 1/0.07: loss log(1 + e^14.2857) = 14.2857.
    """
    assert INFONCE_TEMPERATURE == 0.07
    a = torch.eye(2)
    # float32 resolves 14.2857 + 6.2e-7 to about 1e-6, hence the absolute tolerance.
    assert float(jepa_loss(a, a, "infonce")) == pytest.approx(math.log1p(math.exp(-1 / 0.07)), abs=1e-6)
    swapped = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert float(jepa_loss(a, swapped, "infonce")) == pytest.approx(math.log1p(math.exp(1 / 0.07)), rel=1e-5)
    # Another temperature changes it: at 1.0 the matched case is log(1 + e^-1) = 0.3133.
    assert float(jepa_loss(a, a, "infonce", temperature=1.0)) == pytest.approx(math.log1p(math.exp(-1)), rel=1e-5)


def test_infonce_is_scale_free() -> None:
    """InfoNCE normalises the embeddings: scaling b by 10 changes nothing."""
    a = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    b = torch.tensor([[2.0, 1.0], [1.0, -1.0], [0.0, 1.0]])
    assert float(jepa_loss(a, 10 * b, "infonce")) == pytest.approx(float(jepa_loss(a, b, "infonce")), rel=1e-5)


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="unknown JEPA loss"):
        jepa_loss(torch.ones(1, 2), torch.ones(1, 2), "hinge")


def test_lm_loss_by_hand() -> None:
    """Vocabulary 2, logits (0, 0) -> p = 1/2 each, cross-entropy ln 2; logits (ln 3, 0) with target 0 ->
    p = 3/4, loss -ln(3/4). Ignored positions (-100) do not count: mean of (ln 2, ln(4/3)) over 2 tokens."""
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [5.0, -5.0]]])
    targets = torch.tensor([[1, 0, IGNORE_INDEX]])
    assert float(lm_loss(logits, targets)) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)


def test_sum_reduction_by_hand() -> None:
    """reduction="sum", the path training takes (the trainer divides by the whole step's tokens or pairs).

    JEPA, the two pairs of test_averaged_over_pairs, ((3, 4), (3, 4)) and ((1, 0), (-1, 0)):
    cosine 0 + 2 = 2; l2 0 + 2 = 2; mse per pair mean((0, 0)^2) = 0 and mean((2, 0)^2) = 4 / 2 = 2, sum 2.
    InfoNCE, a = b = ((1, 0), (0, 1)), rows swapped in b: each row log(1 + e^(1/0.07)), sum 2 * 14.2857 = 28.5714.
    LM, test_lm_loss_by_hand's logits: ln 2 + ln(4/3) = 0.6931 + 0.2877 = 0.9808 (the ignored position adds 0).
    """
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
    for kind in ("cosine", "l2", "mse"):
        assert float(jepa_loss(a, b, kind, reduction="sum")) == pytest.approx(2.0, abs=1e-6), kind
    swapped = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert float(jepa_loss(torch.eye(2), swapped, "infonce", reduction="sum")) == pytest.approx(
        2 * math.log1p(math.exp(1 / 0.07)), rel=1e-5)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [5.0, -5.0]]])
    targets = torch.tensor([[1, 0, IGNORE_INDEX]])
    assert float(lm_loss(logits, targets, reduction="sum")) == pytest.approx(math.log(2) + math.log(4 / 3))
    with pytest.raises(ValueError, match="unknown reduction 'total'"):
        jepa_loss(a, b, "cosine", reduction="total")
