"""Report baselines that need no training, scored by `evaluate` exactly like the model.

On IU-Xray, trivial reports score close to published models on BLEU/ROUGE/CIDEr (docs/architecture.md,
"Baselines on IU-Xray"): a generator is only shown to work where it beats them on the same test studies.
- ``template``: the most frequent training target text, given to every test study;
- ``nn_finetuned`` / ``nn_base``: the training text of the most similar training image (cosine of image
  embeddings), by the fine-tuned SigLIP the generator reads and by the base SigLIP it started from.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from worker.generation.encoder import load_siglip
from worker.generation.studies import StudySplit, select_studies
from worker.siglip.checkpoint import FinetunedSiglip, load_base_siglip
from worker.siglip.retrieval import SIMILARITY_BUDGET, similarity_chunks

TEMPLATE, NN_FINETUNED, NN_BASE = "template", "nn_finetuned", "nn_base"
BASELINES = (TEMPLATE, NN_FINETUNED, NN_BASE)


def most_frequent_text(texts: list[str]) -> str:
    """The most frequent text; a tie goes to the text seen first (Counter keeps first-seen order)."""
    if not texts:
        raise ValueError("the template baseline needs at least one training text")
    return Counter(texts).most_common(1)[0][0]


def nearest_texts(
    queries: torch.Tensor, gallery: torch.Tensor, texts: list[str], *, budget: int = SIMILARITY_BUDGET
) -> list[str]:
    """For each L2-normalised query row, the text of the gallery row with the highest cosine (the first such
    row on a tie: torch's argmax returns the first maximum). A chunk of queries at a time against the whole
    gallery (``similarity_chunks``): a 200k-image training gallery never meets every query at once."""
    if gallery.shape[0] != len(texts):
        raise ValueError(f"{gallery.shape[0]} gallery embeddings for {len(texts)} texts")
    best = [scores.argmax(dim=1) for _, scores in similarity_chunks(queries, gallery, budget)]
    return [texts[i] for i in torch.cat(best).tolist()] if best else []


def baseline_texts(
    train: StudySplit, test_images: np.ndarray, siglip_checkpoint: str, device: str
) -> dict[str, list[str]]:
    """Each baseline's text for every test image, from the training studies (one image and text per study,
    as the generator was trained)."""
    studies = select_studies(train)
    train_images = studies.images(train)
    finetuned = load_siglip(siglip_checkpoint, device)
    encoders: dict[str, FinetunedSiglip] = {
        NN_FINETUNED: finetuned,
        NN_BASE: load_base_siglip(finetuned.config, device),
    }
    texts = {TEMPLATE: [most_frequent_text(studies.texts)] * len(test_images)}
    for name, siglip in encoders.items():
        gallery = siglip.encode_images(train_images, f"{name} baseline: encoding the training images")
        queries = siglip.encode_images(test_images, f"{name} baseline: encoding the test images")
        texts[name] = nearest_texts(queries, gallery, studies.texts)
    return texts
