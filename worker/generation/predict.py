"""Generate an impression for every study of a split and score each one: shared by `evaluate` and
`qualitative`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from worker.config import RunConfig
from worker.data.identity import ScoringPlan, scoring_plan
from worker.generation.checkpoint import load_report_model
from worker.generation.encoder import image_features, load_siglip
from worker.generation.generate import generate_reports
from worker.generation.studies import Studies, select_studies
from worker.textmetrics import per_item_scores
from worker.training.device import resolve_accelerator, resolve_precision, torch_device, weights_dtype_for


@dataclass
class Predictions:
    split: str
    studies: Studies
    images: np.ndarray
    """uint8 [N, S, S], the image each report was generated from."""
    generated: list[str]
    scores: list[dict[str, float]]
    """Per study: each per-study metric of worker.metric_registry under its per-item key (bleu4: sentence BLEU,
    see worker.textmetrics.sentence_bleu4; rougeL ...), cosine_generated, cosine_reference; text scores on the
    texts of config.eval.protocol."""
    generation_time_s: float
    siglip_checkpoint: str | None = None
    """The SigLIP checkpoint whose image features the report model reads."""
    plan: ScoringPlan | None = None
    """Which data was scored, and the checkpoint's own data (whose training split the baselines read)."""
    train_overlap: int = 0
    """Scored studies that are in the checkpoint's training split: the goal is 0 (it is all of them only when
    the training split itself is scored)."""
    train_excluded: int = 0
    """Studies of the split left out because the checkpoint trained on them (scoring another dataset)."""

    @property
    def references(self) -> list[str]:
        return self.studies.texts


def predict(config: RunConfig, checkpoint: str, split: str) -> Predictions:
    """Load the report model and its SigLIP, generate for every study of ``split`` of the checkpoint's data
    (worker/data/identity.py), score each study. Of another dataset, the studies the checkpoint trained on
    are left out; of its own, ``split`` is what is scored (``train`` on purpose shows memorisation, and
    ``train_overlap`` says so)."""
    from worker.data import load_prepared

    plan = scoring_plan(config, checkpoint)
    # First: on the smoke preset it also builds the tiny models.
    data = load_prepared(plan.scored).split(split)
    trained_on = plan.training_uids()
    excluded = len(set(data.uids) & trained_on) if plan.other_dataset else 0
    if excluded:
        data = data.without(trained_on)
    accelerator = resolve_accelerator(config.train)
    device = torch_device(accelerator)
    # Decode in the training precision (bf16 on GPUs that support it), not fp32.
    compute_dtype = weights_dtype_for(resolve_precision(config.train, accelerator))
    loaded = load_report_model(checkpoint, config, device=device, compute_dtype=compute_dtype)
    gen = loaded.config.generation
    studies = select_studies(data)
    if not len(studies):
        left_out = f" once the {excluded} the checkpoint trained on are left out" if excluded else ""
        raise ValueError(f"the {split} split has no studies{left_out}; choose another split or a larger dataset")
    images = studies.images(data)
    siglip = load_siglip(loaded.siglip_checkpoint, device)
    features = image_features(siglip, images, gen)

    started = time.perf_counter()
    generated = generate_reports(loaded.captioner, features, loaded.tokenizer, gen, gen.eval_batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    generation_time = time.perf_counter() - started

    image_emb = siglip.encode_images(images)
    cos_generated = (image_emb * siglip.encode_texts(generated)).sum(dim=-1).tolist()
    cos_reference = (image_emb * siglip.encode_texts(studies.texts)).sum(dim=-1).tolist()
    scores = [
        {**text_scores, "cosine_generated": g, "cosine_reference": r}
        for text_scores, g, r in zip(
            per_item_scores(studies.texts, generated, protocol=config.eval.protocol),
            cos_generated,
            cos_reference,
            strict=True,
        )
    ]
    overlap = len(set(studies.study_ids) & trained_on)
    return Predictions(
        split, studies, images, generated, scores, generation_time, loaded.siglip_checkpoint, plan, overlap, excluded
    )
