"""The Hugging Face output of a training checkpoint, and the `export` stage that writes it on demand.

`train` and `train-full` call ``write_run_outputs`` once their fit is done: ``write_hf_output`` on the best
checkpoint, beside the checkpoints. `export` writes the same folder from any checkpoint into its own run
folder, optionally with a merged SigLIP, and can push it to the Hub.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from worker.checkpoint_info import LORA_TARGETS_KEY, RUN_CONFIG_KEY, SIGLIP_CHECKPOINT_KEY
from worker.config import RunConfig
from worker.export.card import CardFacts, render_card
from worker.export.generation import write_report_generator
from worker.export.layout import MERGED_SIGLIP_DIR, MODEL_CARD, RUN_CONFIG, SIGLIP_DIR, hf_output_dir
from worker.export.siglip import write_merged_siglip, write_siglip_adapter
from worker.recorder import Recorder
from worker.result import StageResult
from worker.safe_checkpoint import load_checkpoint
from worker.tracking import log_artifacts
from worker.training.callbacks import METRICS_KEY
from worker.training.runs import output_dir

if TYPE_CHECKING:
    import lightning as L

STAGE = "export"
OUTPUT_NAME = "hf"


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A `train` or `train-full` checkpoint; a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass the best_checkpoint of a train or train-full run"
        )
    # Plain tensors and containers only: a path can come from the network (under the allowed roots).
    checkpoint = load_checkpoint(path, "checkpoint")
    if RUN_CONFIG_KEY not in checkpoint:
        raise ValueError(f"{path} is not a checkpoint of the train or train-full stage (no run config in it)")
    if LORA_TARGETS_KEY not in checkpoint and SIGLIP_CHECKPOINT_KEY not in checkpoint:
        raise ValueError(f"{path} is neither a SigLIP adapter checkpoint (train) nor a train-full checkpoint")
    return checkpoint


def is_report_checkpoint(checkpoint: dict[str, Any]) -> bool:
    return SIGLIP_CHECKPOINT_KEY in checkpoint


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among a stage's metrics (paths, flags and missing values are not card material)."""
    return {
        name: float(value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def write_hf_output(
    checkpoint_path: str | Path, out: Path, *, metrics: dict[str, Any] | None = None, merge: bool = False
) -> Path:
    """Write the output of a checkpoint into ``out``, replacing what was there.

    ``siglip/`` (the adapter), for a train-full checkpoint ``biogpt/`` and ``projector/``, with ``merge``
    ``siglip-merged/``, and ``README.md`` (the model card) and ``run_config.yaml``. ``metrics`` (the run's
    final metrics) default to those the checkpoint was chosen on. The folder is built beside ``out`` and
    renamed into place, so a failure never leaves a half-written output under the final name."""
    checkpoint = read_training_checkpoint(checkpoint_path)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    run_metrics = numeric_metrics(metrics if metrics is not None else checkpoint.get(METRICS_KEY, {}))
    report_config: RunConfig | None = None
    siglip_metrics: dict[str, float] = {}
    siglip_checkpoint: str | Path = checkpoint_path
    if is_report_checkpoint(checkpoint):
        generator = write_report_generator(checkpoint, checkpoint_path, staging)
        report_config, siglip_checkpoint = generator.config, generator.siglip_checkpoint
        siglip_metrics = numeric_metrics(read_training_checkpoint(siglip_checkpoint).get(METRICS_KEY, {}))
    adapter = write_siglip_adapter(siglip_checkpoint, staging / SIGLIP_DIR)
    if merge:
        write_merged_siglip(siglip_checkpoint, staging / MERGED_SIGLIP_DIR)
    run_config = report_config or adapter.config
    (staging / RUN_CONFIG).write_text(yaml.safe_dump(run_config.to_dict(), sort_keys=False))
    card = CardFacts(
        siglip_config=adapter.config,
        logit_scale=adapter.logit_scale,
        logit_bias=adapter.logit_bias,
        metrics=run_metrics,
        report_config=report_config,
        siglip_metrics=siglip_metrics,
        merged=merge,
    )
    (staging / MODEL_CARD).write_text(render_card(card), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def write_run_outputs(trainer: L.Trainer, result: StageResult, ckpt_dir: Path) -> StageResult:
    """A finished run's Hugging Face output beside its checkpoints (rank 0 only), from the best checkpoint
    with the run's final metrics in its model card; the card also goes to MLflow when that logger is on.

    The training stages call it after their fit, so the Trainer they build never imports this package."""
    best = result.artifacts.get("best_checkpoint")
    if result.status != "succeeded" or not best or not trainer.is_global_zero:
        return result
    out = write_hf_output(best, hf_output_dir(ckpt_dir), metrics=result.metrics)
    result.artifacts["hf_output"] = str(out)
    log_artifacts(trainer, [out / MODEL_CARD])
    return result


def export(
    config: RunConfig,
    recorder: Recorder,
    *,
    checkpoint: str,
    merge: bool = False,
    push_to_hub: str | None = None,
    private: bool = False,
) -> StageResult:
    """Stage entry point: the output of ``checkpoint`` in this run's folder; with ``push_to_hub`` also on
    the Hub as one commit (the local output is written first and stays if the push fails)."""
    if push_to_hub:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(push_to_hub)
        except HFValidationError as exc:
            raise ValueError(f"--push-to-hub '{push_to_hub}' is not a repo id like user/name: {exc}") from None
    out = write_hf_output(checkpoint, output_dir(config, STAGE, checkpoint) / OUTPUT_NAME, merge=merge)
    files = [path for path in out.rglob("*") if path.is_file()]
    artifacts = {"hf_output": str(out), "model_card": str(out / MODEL_CARD)}
    if merge:
        artifacts["merged_siglip"] = str(out / MERGED_SIGLIP_DIR)
    if push_to_hub:
        from worker.export.hub import push_folder

        artifacts["hub_commit"] = push_folder(out, push_to_hub, private=private)
    metrics = {"files": len(files), "size_mb": sum(path.stat().st_size for path in files) / 2**20}
    return StageResult(stage=STAGE, metrics=metrics, artifacts=artifacts)
