"""Where each part of the Hugging Face output lives inside its folder."""

from __future__ import annotations

from pathlib import Path

SIGLIP_DIR = "siglip"
"""The SigLIP LoRA adapter (``PeftModel.from_pretrained(AutoModel.from_pretrained(base), <out>/siglip)``)."""
MERGED_SIGLIP_DIR = "siglip-merged"
"""With ``--merge``: the full-precision SigLIP with the adapter merged (``AutoModel.from_pretrained`` alone)."""
BIOGPT_DIR = "biogpt"
"""Report generation: BioGPT's LoRA adapter, or the whole model when it was fully tuned."""
PROJECTOR_DIR = "projector"
"""Report generation: the image-feature-to-prefix projector."""
PROJECTOR_WEIGHTS = "model.safetensors"
PROJECTOR_CONFIG = "config.json"
MODEL_CARD = "README.md"
RUN_CONFIG = "run_config.yaml"


def hf_output_dir(ckpt_dir: Path) -> Path:
    """The output folder beside a run's checkpoint folder: ``checkpoints`` -> ``hf``,
    ``checkpoints-<hash>`` (one per SigLIP checkpoint, report generation) -> ``hf-<hash>``."""
    return ckpt_dir.with_name("hf" + ckpt_dir.name.removeprefix("checkpoints"))
