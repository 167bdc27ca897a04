"""The contrastive losses against reference formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from worker.siglip.losses import infonce_loss, sigmoid_loss


def _pair(n: int = 5, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return F.normalize(torch.randn(n, d), dim=-1), F.normalize(torch.randn(n, d), dim=-1)


def test_sigmoid_loss_matches_the_siglip_reference():
    image, text = _pair()
    scale, bias = torch.tensor([math.log(10.0)]), torch.tensor([-10.0])
    logits = text @ image.t() * scale.exp() + bias  # HF SiglipModel's formulation, rows = texts
    labels = 2 * torch.eye(5) - 1
    reference = -F.logsigmoid(labels * logits).sum(dim=-1).mean()
    assert sigmoid_loss(image, text, scale, bias) == pytest.approx(reference.item(), rel=1e-6)


def test_positive_mask_turns_duplicate_pairs_into_positives():
    image, text = _pair(4)
    scale, bias = torch.tensor([0.0]), torch.tensor([0.0])
    positives = torch.tensor([0, 0, 1, 2])[:, None] == torch.tensor([0, 0, 1, 2])[None, :]
    with_mask = sigmoid_loss(image, text, scale, bias, positives)
    without = sigmoid_loss(image, text, scale, bias)
    logits = image @ text.t()
    delta = (-F.logsigmoid(logits[0, 1]) + F.logsigmoid(-logits[0, 1])
             - F.logsigmoid(logits[1, 0]) + F.logsigmoid(-logits[1, 0])) / 4
    assert with_mask - without == pytest.approx(delta.item(), abs=1e-6)


def test_infonce_matches_cross_entropy_and_trains_scale_and_bias_not():
    image, text = _pair()
    logits = image @ text.t() / 0.07
    reference = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5))) / 2
    assert infonce_loss(image, text, 0.07) == pytest.approx(reference.item(), rel=1e-6)


def test_sigmoid_loss_gives_the_logit_scale_and_bias_gradients():
    image, text = _pair()
    scale = torch.tensor([math.log(10.0)], requires_grad=True)
    bias = torch.tensor([-10.0], requires_grad=True)
    sigmoid_loss(image, text, scale, bias).backward()
    assert scale.grad is not None and bias.grad is not None and bias.grad.abs() > 0
