import math

import pytest
import torch

from pipeline.losses import distill_loss


def test_losses_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [0.25, 0.75]
    hard = torch.tensor([1])
    soft = torch.tensor([[0.5, 0.5]])
    assert distill_loss(logits, "cls", hard, soft).item() == pytest.approx(-math.log(0.75))
    assert distill_loss(logits, "rgr", hard, soft).item() == pytest.approx(0.25**2 * 2)
    assert distill_loss(logits, "kl", hard, soft).item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)))


def test_soft_losses_are_minimal_at_the_target():
    soft = torch.tensor([[0.2, 0.8]])
    at_target = torch.log(soft)
    off_target = torch.tensor([[0.0, 0.0]])
    for mode in ("rgr", "kl"):
        assert distill_loss(at_target, mode, torch.tensor([1]), soft) < distill_loss(off_target, mode, torch.tensor([1]), soft)


def test_unknown_mode():
    with pytest.raises(ValueError, match="distill.mode: must be one of"):
        distill_loss(torch.zeros(1, 2), "mse", torch.tensor([0]), torch.zeros(1, 2))
