"""The SigLIP side of the output: the LoRA adapter folder, and on request the merged full model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker.base_models import base_source
from worker.config import RunConfig
from worker.siglip.checkpoint import load_finetuned_siglip, load_peft_siglip


@dataclass(frozen=True)
class SiglipAdapter:
    """What the model card says about an exported SigLIP adapter."""

    config: RunConfig
    """The run config of the `train` run that wrote the checkpoint."""
    logit_scale: float
    logit_bias: float


def write_siglip_adapter(checkpoint: str | Path, out: Path) -> SiglipAdapter:
    """``save_pretrained`` of the checkpoint's adapter, with the base model's tokenizer and image processor.

    The adapter is taken from an fp32 base for LoRA and QLoRA alike: the adapter weights are the same, and
    a QLoRA user quantizes the base at load time (the model card shows how)."""
    peft_model, config = load_peft_siglip(checkpoint, quantize=False)
    # The hub id at its pinned commit, or the absolute local folder (not a path relative to some var dir).
    path, pinned = base_source(config, "siglip")
    peft_model.peft_config["default"].base_model_name_or_path = path
    peft_model.peft_config["default"].revision = pinned.get("revision")
    peft_model.save_pretrained(out)
    for part in base_processors(config):
        part.save_pretrained(out)
    base = peft_model.get_base_model()
    return SiglipAdapter(config, base.logit_scale.detach().item(), base.logit_bias.detach().item())


def base_processors(config: RunConfig) -> tuple[object, object]:
    """The base SigLIP's tokenizer and image processor (the adapter does not change preprocessing)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    path, pinned = base_source(config, "siglip")
    return AutoTokenizer.from_pretrained(path, **pinned), AutoImageProcessor.from_pretrained(path, **pinned)


def write_merged_siglip(checkpoint: str | Path, out: Path) -> Path:
    """The fp32 base with the adapter merged (``merge_and_unload``) and the trained logit scale/bias, saved
    as a plain SigLIP with its tokenizer and image processor: ``AutoModel.from_pretrained(out)`` loads it."""
    siglip = load_finetuned_siglip(str(checkpoint), merge=True)
    siglip.model.save_pretrained(out)
    siglip.tokenizer.save_pretrained(out)
    siglip.image_processor.save_pretrained(out)
    return out
