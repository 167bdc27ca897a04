"""The frozen image side: the fine-tuned SigLIP (adapter merged) and the features the projector reads."""

from __future__ import annotations

import numpy as np
import torch

from worker.config import GenerationConfig
from worker.generation.model import pool_patches
from worker.progress import progress
from worker.siglip.checkpoint import FinetunedSiglip, load_finetuned_siglip


def load_siglip(checkpoint: str, device: str) -> FinetunedSiglip:
    """The SigLIP checkpoint of the `train` stage, adapters merged, in eval mode."""
    return load_finetuned_siglip(checkpoint, merge=True, device=device)


@torch.no_grad()
def image_features(
    siglip: FinetunedSiglip, images: np.ndarray, gen: GenerationConfig, label: str = "image features"
) -> torch.Tensor:
    """Vision features (fp32, on the CPU) of uint8 images [N, S, S], per ``gen.features``: pooled [N, D],
    or patch states already averaged to K = gen.prefix_tokens regions [N, K, D] (the projector's first
    step, done here so that a split of 448 px images does not hold N x 1024 x D floats in memory)."""
    chunks = []
    with progress(label, len(images), "images") as advance:
        for start in range(0, len(images), gen.eval_batch_size):
            batch = np.asarray(images[start : start + gen.eval_batch_size])
            pooled, patches = siglip.vision_features(siglip.normalizer.from_uint8(batch))
            chunk = pooled if gen.features == "pooled" else pool_patches(patches, gen.prefix_tokens)
            chunks.append(chunk.float().cpu())
            advance(len(batch))
    return torch.cat(chunks)
