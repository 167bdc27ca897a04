"""Load a `train-full` checkpoint back into a ready captioner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from worker.base_models import base_source, verified_base
from worker.config import RunConfig
from worker.generation.model import ReportCaptioner, build_captioner
from worker.generation.module import (
    BASE_FINGERPRINT_KEY,
    FEATURE_DIM_KEY,
    RUN_CONFIG_KEY,
    SIGLIP_CHECKPOINT_KEY,
    base_fingerprint,
)
from worker.inputs import local_file
from worker.safe_checkpoint import load_checkpoint

# What shapes the network: taken from the checkpoint, whatever the caller's config says.
ARCHITECTURE_FIELDS = ("prefix_tokens", "projector", "features", "biogpt_tuning", "lora_r", "lora_alpha")
MODULE_PREFIX = "captioner."


@dataclass
class LoadedReportModel:
    config: RunConfig
    """The caller's config with the checkpoint's architecture and BioGPT (decoding settings: the caller's)."""
    captioner: ReportCaptioner
    tokenizer: object
    siglip_checkpoint: str


def load_report_model(
    checkpoint: str, config: RunConfig, device: str = "cpu", compute_dtype: torch.dtype = torch.float32
) -> LoadedReportModel:
    """Rebuild the captioner of ``checkpoint`` on ``device`` (frozen BioGPT weights in ``compute_dtype``);
    raises ValueError for a foreign file."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"report-generation checkpoint {path} does not exist; pass the best_checkpoint "
                                "that `train-full` returned")
    state = load_checkpoint(path, "report-generation checkpoint")
    if RUN_CONFIG_KEY not in state or SIGLIP_CHECKPOINT_KEY not in state:
        raise ValueError(f"{path} is not a train-full checkpoint (no run config / SigLIP checkpoint in it)")
    trained = RunConfig.model_validate(state[RUN_CONFIG_KEY])
    arch = {name: getattr(trained.generation, name) for name in ARCHITECTURE_FIELDS}
    # The base it was trained on: the recorded BioGPT and its revision, checked before anything loads.
    recorded = {"biogpt": trained.model.biogpt, "biogpt_revision": trained.model.biogpt_revision}
    model = config.model.model_copy(update=recorded)
    config = verified_base(
        config.model_copy(update={"generation": config.generation.model_copy(update=arch), "model": model}),
        "biogpt",
        f"checkpoint {path}",
    )
    base, pinned = base_source(config, "biogpt")
    tokenizer = AutoTokenizer.from_pretrained(base, **pinned)
    captioner = build_captioner(config, tokenizer, state[FEATURE_DIM_KEY], compute_dtype=compute_dtype, device=device)
    if abs(base_fingerprint(captioner) - state[BASE_FINGERPRINT_KEY]) > 1e-3 * abs(state[BASE_FINGERPRINT_KEY]):
        raise ValueError(
            f"{path} was trained on a different {config.model.biogpt} than the one at "
            f"{base}; use the config (and var dir) it was trained with"
        )
    weights = {k.removeprefix(MODULE_PREFIX): v for k, v in state["state_dict"].items()}
    unexpected = captioner.load_state_dict(weights, strict=False).unexpected_keys
    required = {n for n, p in captioner.named_parameters() if p.requires_grad}
    required |= {f"projector.{name}" for name in captioner.projector.state_dict()}
    if unexpected or required - set(weights):
        raise ValueError(f"{path} does not fit the rebuilt model: unexpected {unexpected[:3]}, "
                         f"missing {sorted(required - set(weights))[:3]}")
    captioner.eval()
    return LoadedReportModel(config, captioner, tokenizer, local_file(state[SIGLIP_CHECKPOINT_KEY]))
