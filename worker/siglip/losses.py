"""Contrastive losses over a batch of L2-normalised image and text embeddings.

Both take an optional ``positives`` mask: IU-Xray impressions repeat verbatim, so two studies in a batch
often share a text. Treating such a pair as a negative would push identical reports apart; the mask marks
every pair whose texts are equal as positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _positives_or_eye(positives: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    if positives is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    return positives


def sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: every (image, text) pair is a binary decision, summed per image
    and averaged over the batch, with a learnable temperature (``exp(logit_scale)``) and bias."""
    logits = image_embeds @ text_embeds.t() * logit_scale.exp() + logit_bias
    labels = 2.0 * _positives_or_eye(positives, logits.shape[0], logits.device).to(logits.dtype) - 1.0
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


def infonce_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    temperature: float,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric softmax (CLIP) loss with a fixed temperature; the target spreads evenly over positives."""
    logits = image_embeds @ text_embeds.t() / temperature
    targets = _positives_or_eye(positives, logits.shape[0], logits.device).to(logits.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)
    image_to_text = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    text_to_image = torch.sum(-targets.t() * F.log_softmax(logits.t(), dim=1), dim=1).mean()
    return (image_to_text + text_to_image) / 2
