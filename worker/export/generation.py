"""The report-generation side of the output: BioGPT (adapter, or whole when fully tuned) and the projector."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file

from worker.base_models import base_source
from worker.config import RunConfig
from worker.export.layout import BIOGPT_DIR, PROJECTOR_CONFIG, PROJECTOR_DIR, PROJECTOR_WEIGHTS
from worker.generation.checkpoint import load_report_model
from worker.generation.module import FEATURE_DIM_KEY, RUN_CONFIG_KEY


@dataclass(frozen=True)
class ReportGenerator:
    """What the model card says about an exported report generator."""

    config: RunConfig
    """The run config of the `train-full` run that wrote the checkpoint."""
    siglip_checkpoint: str
    """The SigLIP checkpoint whose features the projector reads (exported beside it)."""


def write_report_generator(checkpoint: dict, checkpoint_path: str | Path, out: Path) -> ReportGenerator:
    """``<out>/biogpt``: BioGPT's adapter (``save_pretrained``) or, fully tuned, the whole model, with its
    tokenizer; ``<out>/projector``: the projector's tensors (feature statistics and gain included) as
    safetensors, and the config that rebuilds it."""
    config = RunConfig.model_validate(checkpoint[RUN_CONFIG_KEY])
    loaded = load_report_model(str(checkpoint_path), config)
    captioner = loaded.captioner
    lm = captioner.lm
    if hasattr(lm, "peft_config"):
        path, pinned = base_source(loaded.config, "biogpt")
        lm.peft_config["default"].base_model_name_or_path = path
        lm.peft_config["default"].revision = pinned.get("revision")
    lm.save_pretrained(out / BIOGPT_DIR)
    loaded.tokenizer.save_pretrained(out / BIOGPT_DIR)

    projector = captioner.projector
    folder = out / PROJECTOR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().float().contiguous().cpu() for name, tensor in projector.state_dict().items()}
    save_file(tensors, folder / PROJECTOR_WEIGHTS, metadata={"format": "pt"})
    gen = loaded.config.generation
    description = {
        "feature_dim": int(checkpoint[FEATURE_DIM_KEY]),
        "width": projector.width,
        "prefix_tokens": projector.prefix_tokens,
        "projector": gen.projector,
        "features": gen.features,
        "start_ids": captioner.start_ids,
        "eos_id": captioner.eos_id,
        "pad_id": captioner.pad_id,
        "usage": "SigLIP vision features (pooled [N, D], or patches averaged to prefix_tokens regions) are "
        "standardised with feature_mean/feature_std, mapped by net, LayerNorm-ed and multiplied by gain: "
        "prefix_tokens embeddings that precede start_ids as BioGPT's inputs_embeds.",
    }
    (folder / PROJECTOR_CONFIG).write_text(json.dumps(description, indent=2) + "\n")
    return ReportGenerator(config, loaded.siglip_checkpoint)
