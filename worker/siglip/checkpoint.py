"""Rebuild a fine-tuned SigLIP from an adapter checkpoint written by the `train` stage.

A checkpoint holds only the trainable tensors (LoRA adapters, logit scale/bias), the RunConfig and the
adapted module names; the base weights come from ``config.model.siglip`` again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

from worker.base_models import base_source, verified_base
from worker.checkpoint_info import LORA_TARGETS_KEY, RUN_CONFIG_KEY
from worker.config import RunConfig
from worker.progress import progress
from worker.safe_checkpoint import load_checkpoint
from worker.siglip.datamodule import tokenize
from worker.siglip.model import LoadPlan, build_peft_siglip, load_base_model
from worker.siglip.preprocess import ImageNormalizer

LIGHTNING_PREFIX = "model."  # the LightningModule holds the PEFT model as `self.model`
ENCODE_BATCH = 64


@dataclass
class FinetunedSiglip:
    """A fine-tuned SigLIP (or its base, see load_base_siglip) ready for inference, with its preprocessing."""

    model: SiglipModel
    image_processor: object
    tokenizer: object
    config: RunConfig
    device: torch.device

    @property
    def normalizer(self) -> ImageNormalizer:
        size = self.model.config.vision_config.image_size
        return ImageNormalizer.for_model(self.image_processor, size)

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, label: str = "encoding images") -> torch.Tensor:
        """uint8 grayscale [N, S, S] (an array, a memory map or a view of its rows) -> L2-normalised image
        embeddings [N, D] (fp32, on the CPU); ``label`` names the step in its progress (worker/progress.py)."""
        # Batch first, convert second: the whole split in fp32 at once is 4x its uint8 size (about 5 GB for
        # the training split at 448 px), for no gain.
        out = []
        with progress(label, len(images), "images") as advance:
            for start in range(0, len(images), ENCODE_BATCH):
                batch = np.asarray(images[start : start + ENCODE_BATCH])
                out.append(self.vision_features(self.normalizer.from_uint8(batch))[0].float().cpu())
                advance(len(batch))
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], label: str = "encoding texts") -> torch.Tensor:
        """Cleaned texts -> L2-normalised text embeddings [N, D] (fp32, on the CPU). Tokenized a batch at a
        time: the token ids of a 200k-text training split are never held at once."""
        texts, text_model = list(texts), self.model.text_model
        length = self.config.train.max_text_length
        out = []
        with progress(label, len(texts), "texts") as advance:
            for start in range(0, len(texts), ENCODE_BATCH):
                ids = tokenize(self.tokenizer, texts[start : start + ENCODE_BATCH], length).to(self.device)
                out.append(text_model(input_ids=ids).pooler_output.float().cpu())
                advance(len(ids))
        return F.normalize(torch.cat(out), dim=-1)

    def vision_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values [N, 3, H, W] -> (pooled [N, D], patch states [N, P, D]), on the model's device.

        Gradients flow if the caller enables them (report generation may train on top)."""
        dtype = next(self.model.vision_model.parameters()).dtype
        out = self.model.vision_model(pixel_values=pixel_values.to(self.device, dtype))
        return out.pooler_output, out.last_hidden_state


def read_checkpoint(checkpoint_path: str | Path) -> dict:
    """The checkpoint dict; a clear error when the file is missing or was not written by the train stage."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"SigLIP checkpoint {path} does not exist; pass the best_checkpoint of a train run")
    checkpoint = load_checkpoint(path, "SigLIP checkpoint")
    if RUN_CONFIG_KEY not in checkpoint or LORA_TARGETS_KEY not in checkpoint:
        raise ValueError(f"{path} is not a SigLIP adapter checkpoint from the train stage (no run config in it)")
    return checkpoint


def load_peft_siglip(
    checkpoint_path: str | Path, *, quantize: bool, device: str = "cpu"
) -> tuple[PeftModel, RunConfig]:
    """The base model with the checkpoint's adapters (kept separate) and logit scale/bias, and its RunConfig.

    quantize=True loads the base in 4-bit NF4 as a QLoRA run trained it; False loads it in fp32."""
    checkpoint = read_checkpoint(checkpoint_path)
    trained = RunConfig.model_validate(checkpoint[RUN_CONFIG_KEY])
    config = verified_base(trained, "siglip", f"checkpoint {checkpoint_path}")
    plan = LoadPlan(quantize=quantize, weights_dtype=torch.float32, device_map={"": device} if quantize else None)
    peft_model = build_peft_siglip(config, plan, targets=checkpoint[LORA_TARGETS_KEY])
    state = {k.removeprefix(LIGHTNING_PREFIX): v for k, v in checkpoint["state_dict"].items()}
    result = peft_model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{checkpoint_path}: tensors that fit no parameter, e.g. {result.unexpected_keys[0]}")
    missing_trainable = [k for k, p in peft_model.named_parameters() if p.requires_grad and k not in state]
    if missing_trainable:
        raise ValueError(f"{checkpoint_path}: no value for trainable parameter {missing_trainable[0]}")
    return peft_model, config


def load_finetuned_siglip(checkpoint_path: str, *, merge: bool = True, device: str = "cpu") -> FinetunedSiglip:
    """Base model + the checkpoint's adapters and logit scale/bias, in eval mode.

    merge=True: the base is loaded in full precision (fp32) and the adapters are merged into it, also for
    a QLoRA checkpoint (the result then differs from the 4-bit training-time model by the quantization
    error). merge=False: the base is loaded exactly as trained (4-bit NF4 for QLoRA) with the adapters kept
    separate, which reproduces the training-time embeddings."""
    config = RunConfig.model_validate(read_checkpoint(checkpoint_path)[RUN_CONFIG_KEY])
    quantize = config.peft.method == "qlora" and not merge
    peft_model, config = load_peft_siglip(checkpoint_path, quantize=quantize, device=device)
    model = peft_model.merge_and_unload() if merge else peft_model.get_base_model()
    if not quantize:
        model = model.to(device)
    return _for_inference(model, config, device)


def load_base_siglip(config: RunConfig, device: str = "cpu") -> FinetunedSiglip:
    """The un-adapted ``config.model.siglip`` (fp32, eval mode) with the same preprocessing: the reference a
    fine-tuned SigLIP is measured against (e.g. the nearest-neighbour report baseline)."""
    model = load_base_model(config, LoadPlan(quantize=False, weights_dtype=torch.float32)).to(device)
    return _for_inference(model, config, device)


def _for_inference(model: SiglipModel, config: RunConfig, device: str) -> FinetunedSiglip:
    model.eval().requires_grad_(False)
    path, pinned = base_source(config, "siglip")
    return FinetunedSiglip(
        model=model,
        image_processor=AutoImageProcessor.from_pretrained(path, **pinned),
        tokenizer=AutoTokenizer.from_pretrained(path, **pinned),
        config=config,
        device=torch.device(device),
    )
