"""The `predict` stage: a fine-tuned checkpoint on new image files.

For every readable file: the impression the report generator writes (train-full checkpoints) and the
training reports closest to the image in the fine-tuned SigLIP's embedding space, with their cosine.
(`worker/generation/predict.py` is another thing: it scores the studies of a dataset split.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from worker.config import RunConfig
from worker.inference.images import InputImage, collect_paths, read_image
from worker.inference.page import write_page
from worker.recorder import Recorder
from worker.result import StageResult
from worker.siglip.checkpoint import FinetunedSiglip, load_finetuned_siglip
from worker.siglip.retrieval import SIMILARITY_BUDGET, similarity_chunks
from worker.training.device import resolve_accelerator, resolve_precision, torch_device, weights_dtype_for
from worker.training.runs import output_dir

STAGE = "predict"


def training_reports(siglip: FinetunedSiglip, config: RunConfig, checkpoint: str) -> tuple[list[str], torch.Tensor]:
    """The distinct texts of the training split ``checkpoint`` was trained on, and their SigLIP embeddings.
    Data and split come from the checkpoint (worker/data/identity.py); where data lives (var dir) from the
    caller's config."""
    from worker.data import load_prepared
    from worker.data.identity import scoring_plan

    trained_on = scoring_plan(config, checkpoint).trained
    texts = list(dict.fromkeys(load_prepared(trained_on).split("train").texts))
    return texts, siglip.encode_texts(texts, "encoding the training reports")


def most_similar(
    image_emb: torch.Tensor, text_emb: torch.Tensor, texts: list[str], k: int, *, budget: int = SIMILARITY_BUDGET
) -> list[list[dict]]:
    """Per image: the k texts of highest cosine (embeddings are L2-normalised), best first. A chunk of images
    at a time against every text (``similarity_chunks``): never images x 200k texts at once."""
    chunks = [scores.topk(min(k, len(texts)), dim=-1) for _, scores in similarity_chunks(image_emb, text_emb, budget)]
    values = torch.cat([chunk.values for chunk in chunks]) if chunks else torch.empty(0, 0)
    indices = torch.cat([chunk.indices for chunk in chunks]) if chunks else torch.empty(0, 0, dtype=torch.long)
    return [
        [{"rank": r + 1, "report": texts[i], "cosine": float(v)} for r, (v, i) in enumerate(zip(vs, ix, strict=True))]
        for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def predict_images(
    config: RunConfig, recorder: Recorder, *, checkpoint: str, images: list[str], top_k: int = 5
) -> StageResult:
    """Stage entry point: ``predictions.jsonl`` (one line per input file, unreadable ones with their error)
    and ``predictions.html``. Fails only when no file at all could be read."""
    from worker.export.stage import is_report_checkpoint, read_training_checkpoint

    started = time.perf_counter()
    is_report = is_report_checkpoint(read_training_checkpoint(checkpoint))
    device = torch_device(resolve_accelerator(config.train))
    generator = _load_generator(config, checkpoint, device) if is_report else None
    siglip = load_finetuned_siglip(generator.siglip_checkpoint if generator else checkpoint, device=device)

    inputs = [read_image(path, config.data.image_size) for path in collect_paths(images)]
    readable = [item for item in inputs if item.pixels is not None]
    if not inputs:
        raise ValueError(f"no image files found in {images}; pass PNG, JPEG or DICOM files or folders holding them")
    if not readable:
        first = inputs[0]
        raise ValueError(f"none of the {len(inputs)} files could be read (e.g. {first.path}: {first.error})")
    pixels = np.stack([item.pixels for item in readable])
    texts, text_emb = training_reports(siglip, config, checkpoint)
    similar = most_similar(siglip.encode_images(pixels), text_emb, texts, top_k)
    impressions: list[str | None] = [None] * len(readable)
    if generator is not None:
        impressions = list(_generate(generator, siglip, pixels))

    records = _records(inputs, impressions, similar)
    folder = output_dir(config, STAGE, checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / "predictions.jsonl"
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    html = write_page(records, {item.path: item.pixels for item in readable}, checkpoint, folder / "predictions.html")
    elapsed = time.perf_counter() - started
    metrics = {
        "num_files": len(inputs),
        "num_predicted": len(readable),
        "num_failed": len(inputs) - len(readable),
        "predict_time_s": elapsed,
    }
    recorder.log_metrics({k: float(v) for k, v in metrics.items()}, split=STAGE)
    return StageResult(stage=STAGE, metrics=metrics, artifacts={"predictions": str(jsonl), "html": str(html)})


def _load_generator(config: RunConfig, checkpoint: str, device: str):
    from worker.generation.checkpoint import load_report_model

    compute_dtype = weights_dtype_for(resolve_precision(config.train, resolve_accelerator(config.train)))
    return load_report_model(checkpoint, config, device=device, compute_dtype=compute_dtype)


def _generate(generator, siglip: FinetunedSiglip, pixels: np.ndarray) -> list[str]:
    from worker.generation.encoder import image_features
    from worker.generation.generate import generate_reports

    gen = generator.config.generation
    features = image_features(siglip, pixels, gen)
    return generate_reports(generator.captioner, features, generator.tokenizer, gen, gen.eval_batch_size)


def _records(
    inputs: list[InputImage], impressions: list[str | None], similar: list[list[dict]]
) -> list[dict[str, Any]]:
    """One record per input file, in input order; the predictions are in the order of the readable files."""
    predictions = iter(zip(impressions, similar, strict=True))
    records: list[dict[str, Any]] = []
    for item in inputs:
        if item.pixels is None:
            records.append({"path": item.path, "status": "error", "error": item.error})
            continue
        impression, hits = next(predictions)
        records.append(
            {"path": item.path, "status": "predicted", "format": item.format, "impression": impression,
             "similar_reports": hits}
        )  # fmt: skip
    return records
