"""Distillation losses over student logits ``z`` (batch x classes).

- ``cls``: cross-entropy on the teacher's hard label, ``-log softmax(z)[y]``.
- ``rgr``: squared error between the student's probabilities and the soft
  label, ``sum_c (softmax(z)_c - p_c)^2`` (regression, as in WWW'23).
- ``kl``: soft cross-entropy ``-sum_c p_c log softmax(z)_c``, which equals
  KL(p || softmax(z)) plus the constant entropy of p.
Each is averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("cls", "rgr", "kl")


def distill_loss(logits: torch.Tensor, mode: str, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    if mode == "cls":
        return F.cross_entropy(logits, hard)
    if mode == "rgr":
        return ((logits.softmax(dim=-1) - soft) ** 2).sum(dim=-1).mean()
    if mode == "kl":
        return -(soft * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
    raise ValueError(f"distill.mode: must be one of {MODES}, got {mode!r}")
