"""The model card (``README.md``) of an output folder: what was trained on what, how well, how to load it,
and what it is not for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

from worker.base_models import base_source, is_hub_model
from worker.config import RunConfig
from worker.export.layout import BIOGPT_DIR, MERGED_SIGLIP_DIR, PROJECTOR_DIR, RUN_CONFIG, SIGLIP_DIR
from worker.siglip.model import SKIP_4BIT_MODULES

# Shown first when present; every other recorded metric follows in name order.
HEADLINE_METRICS = ("val_loss", "train_loss", "i2t_recall@1", "t2i_recall@1", "i2t_recall@5", "bleu4", "rougeL")


@dataclass(frozen=True)
class CardFacts:
    siglip_config: RunConfig
    """The `train` run's config (base model, data, LoRA/QLoRA settings)."""
    logit_scale: float
    logit_bias: float
    metrics: dict[str, float]
    report_config: RunConfig | None = None
    """The `train-full` run's config, for a report-generation output."""
    siglip_metrics: dict[str, float] = field(default_factory=dict)
    """For a report-generation output: the metrics of the SigLIP checkpoint it reads."""
    merged: bool = False


# The template is a file of its own: a model card's Markdown table rows are longer than code lines.
TEMPLATE = Environment(
    loader=FileSystemLoader(Path(__file__).parent), trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
).get_template("model_card.md.j2")


def _metric_rows(metrics: dict[str, float]) -> list[tuple[str, float]]:
    first = [name for name in HEADLINE_METRICS if name in metrics]
    rest = sorted(name for name in metrics if name not in first and not name.startswith("lr-"))
    return [(name, float(metrics[name])) for name in first + rest]


def _dataset(config: RunConfig) -> str:
    data = config.data
    return {
        "synthetic": "synthetic IU-Xray (built locally, Kaggle layout)",
        "kaggle": f"IU-Xray, Kaggle `{data.kaggle_dataset}`",
        "local": "IU-Xray, a local copy in the Kaggle layout",
        "chexpert-plus": "CheXpert Plus (Stanford AIMI), a local copy of its report CSV and PNG images",
        "manifest": "the user's own chest X-ray images and reports, listed in a manifest file",
        "mimic-cxr": "MIMIC-CXR-JPG 2.x (PhysioNet), a local copy",
    }.get(data.source, f"a local `{data.source}` dataset")


def _revision(config: RunConfig, field: str) -> str:
    """How the card names the exact base: a hub commit, or a local folder's weights hash."""
    revision = getattr(config.model, f"{field}_revision")
    if not revision:
        return "not recorded (trained before bases were pinned)"
    return f"commit `{revision}`" if is_hub_model(config, field) else f"local weights `{revision}`"


def render_card(facts: CardFacts) -> str:
    siglip, report = facts.siglip_config, facts.report_config
    method = "QLoRA (4-bit NF4 base + LoRA)" if siglip.peft.method == "qlora" else "LoRA"
    if report is None:
        title = f"SigLIP {method} adapter for chest X-ray image-report retrieval"
        summary = (f"A {method} adapter for `{siglip.model.siglip}`, trained contrastively on chest X-ray images and "
                   "their reports by medvl-peft. It gives image and text embeddings for retrieval.")
        tables = [("Best checkpoint (lowest validation loss):", _metric_rows(facts.metrics))]
    else:
        title = f"Chest X-ray report generation: SigLIP ({method}) + BioGPT ({report.generation.biogpt_tuning})"
        summary = ("The fine-tuned SigLIP's vision features, through a trained projector, become prefix embeddings "
                   f"that `{report.model.biogpt}` continues into the report's {report.data.target}. "
                   "Made by medvl-peft.")
        tables = [
            ("Report generation (best checkpoint):", _metric_rows(facts.metrics)),
            ("The SigLIP checkpoint it reads:", _metric_rows(facts.siglip_metrics)),
        ]
    return TEMPLATE.render(
        title=title,
        summary=summary,
        siglip=siglip,
        report=report,
        siglip_method=method,
        siglip_revision=_revision(siglip, "siglip"),
        siglip_commit=base_source(siglip, "siglip")[1].get("revision"),
        biogpt_revision=_revision(report, "biogpt") if report else None,
        dataset=_dataset(siglip),
        fractions="/".join(f"{f:g}" for f in siglip.data.split_fractions),
        skip_4bit=SKIP_4BIT_MODULES,
        logit_scale=facts.logit_scale,
        logit_bias=facts.logit_bias,
        metric_tables=tables,
        merged=facts.merged,
        run_config=RUN_CONFIG,
        siglip_dir=SIGLIP_DIR,
        merged_dir=MERGED_SIGLIP_DIR,
        biogpt_dir=BIOGPT_DIR,
        projector_dir=PROJECTOR_DIR,
    )
