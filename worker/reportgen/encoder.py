"""The frozen image side: the fine-tuned SigLIP (adapter merged) and the features the projector reads."""

from __future__ import annotations

import numpy as np
import torch

from worker.siglip.checkpoint import FinetunedSiglip, load_finetuned_siglip


def load_siglip(checkpoint: str, device: str) -> FinetunedSiglip:
    """The SigLIP checkpoint of the `train` stage, adapters merged, in eval mode."""
    return load_finetuned_siglip(checkpoint, merge=True, device=device)


@torch.no_grad()
def image_features(siglip: FinetunedSiglip, images: np.ndarray, kind: str, batch_size: int) -> torch.Tensor:
    """Pooled [N, D] or patch [N, P, D] vision features (fp32, on the CPU) of uint8 images [N, S, S]."""
    chunks = []
    for start in range(0, len(images), batch_size):
        pixels = siglip.normalizer.from_uint8(np.asarray(images[start : start + batch_size]))
        pooled, patches = siglip.vision_features(pixels)
        chunks.append((pooled if kind == "pooled" else patches).float().cpu())
    return torch.cat(chunks)
