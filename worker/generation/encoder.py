"""The frozen image side: the fine-tuned SigLIP (adapter merged) and the features the projector reads."""

from __future__ import annotations

from collections.abc import Iterator

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
def feature_batches(
    siglip: FinetunedSiglip, images: np.ndarray, gen: GenerationConfig, label: str = "image features"
) -> Iterator[torch.Tensor]:
    """``image_features`` a batch of ``gen.eval_batch_size`` images at a time, in order (fp32, on the CPU)."""
    with progress(label, len(images), "images") as advance:
        for start in range(0, len(images), gen.eval_batch_size):
            batch = np.asarray(images[start : start + gen.eval_batch_size])
            pooled, patches = siglip.vision_features(siglip.normalizer.from_uint8(batch))
            chunk = pooled if gen.features == "pooled" else pool_patches(patches, gen.prefix_tokens)
            yield chunk.float().cpu()
            advance(len(batch))


def image_features(
    siglip: FinetunedSiglip, images: np.ndarray, gen: GenerationConfig, label: str = "image features"
) -> torch.Tensor:
    """Vision features (fp32, on the CPU) of uint8 images [N, S, S], per ``gen.features``: pooled [N, D],
    or patch states already averaged to K = gen.prefix_tokens regions [N, K, D] (the projector's first
    step, done here so that a split of 448 px images does not hold N x 1024 x D floats in memory).
    All of them in memory: for a few images (predict, a test split); train-full writes a training split's
    to a file instead (``worker.generation.features``)."""
    return torch.cat(list(feature_batches(siglip, images, gen, label)))
