"""Load SigLIP (full precision or 4-bit NF4) and wrap it with LoRA adapters.

Choices that matter for memory (docs/architecture.md, "SigLIP in 4-bit"):
- The vision pooling head (``nn.MultiheadAttention``) breaks in 4-bit and reads ``out_proj.weight``
  directly, so it is neither quantized nor adapted.
- We do NOT call ``prepare_model_for_kbit_training`` by default: it upcasts every frozen non-4-bit weight
  to fp32 and turns on gradient checkpointing, which made QLoRA use more memory than LoRA. Both are
  config switches here (``peft.upcast_non_quantized``, ``train.gradient_checkpointing``).
- Frozen weights are stored in the compute dtype (bf16 under bf16-mixed, else fp32) for both methods, so
  LoRA and QLoRA differ only by quantization; trainable parameters are always fp32.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModel, BitsAndBytesConfig, SiglipModel

from worker.base_models import base_source
from worker.config import RunConfig

POOLING_HEAD = "vision_model.head"
# Modules kept out of 4-bit: the attention-pooling head (breaks: dtype mismatch in out_proj).
SKIP_4BIT_MODULES = [POOLING_HEAD]
# Trained alongside the adapters when the loss uses them (SigLIP's sigmoid loss).
LOGIT_PARAMS = ("logit_scale", "logit_bias")
TOWER_PREFIXES = {"vision": ("vision_model.",), "text": ("text_model.",), "both": ("vision_model.", "text_model.")}
# SigLIP paper's initialisation; HF's random init (0, 0) leaves a tiny random model stuck at chance.
PAPER_LOGIT_SCALE = math.log(10.0)
PAPER_LOGIT_BIAS = -10.0


@dataclass(frozen=True)
class LoadPlan:
    """How the base model is loaded: quantized or not, which dtype frozen weights take, where it goes."""

    quantize: bool
    weights_dtype: torch.dtype
    device_map: dict[str, int | str] | None = None


def load_base_model(config: RunConfig, plan: LoadPlan) -> SiglipModel:
    """AutoModel.from_pretrained on config.model.siglip, optionally in 4-bit NF4 with double quant."""
    path, pinned = base_source(config, "siglip")
    token = os.environ.get("HF_TOKEN") if config.model.requires_hf_token else None
    if config.model.requires_hf_token and not token:
        raise RuntimeError(
            f"{config.model.siglip} is gated: set HF_TOKEN to a token that has accepted its licence, where this "
            f"process runs ({socket.gethostname()}: a worker's own environment or .env, not the submitting shell's)"
        )
    kwargs: dict = {"dtype": plan.weights_dtype, "token": token, **pinned}
    if plan.quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=config.peft.double_quant,
            bnb_4bit_compute_dtype=plan.weights_dtype,
            llm_int8_skip_modules=SKIP_4BIT_MODULES,
        )
        # A 4-bit model refuses .to(); it must be placed at load time (one device per DDP rank).
        kwargs["device_map"] = plan.device_map or {"": "cpu"}
    try:
        model = AutoModel.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise RuntimeError(
            f"cannot load SigLIP from '{config.model.siglip}' ({exc.__class__.__name__}); check the path or hub id,"
            " or set model.build_tiny_fixtures=true for the offline smoke preset"
        ) from exc
    if not isinstance(model, SiglipModel):
        kind = type(model).__name__
        raise RuntimeError(f"'{config.model.siglip}' is a {kind}, not a SiglipModel; point model.siglip at SigLIP")
    if plan.quantize:
        disable_cpu_inference_packing(model)
    return model


def disable_cpu_inference_packing(model: nn.Module) -> None:
    """bitsandbytes repacks 4-bit weights for AVX512-BF16 CPUs on the first no-grad eval forward, in place;
    the packed layout has no backward (training after validation would stop getting input gradients)
    and fails for layers narrower than the 64-value quantization block."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def init_logit_params(model: SiglipModel, bias: float | None = None) -> None:
    """Replace HF's untrained (0, 0) logit scale/bias by SigLIP's own init (pretrained values stay);
    then set the bias to ``bias`` when given (train.logit_bias_init)."""
    with torch.no_grad():
        if model.logit_scale.item() == 0.0 and model.logit_bias.item() == 0.0:
            model.logit_scale.fill_(PAPER_LOGIT_SCALE)
            model.logit_bias.fill_(PAPER_LOGIT_BIAS)
        if bias is not None:
            model.logit_bias.fill_(bias)


def lora_target_names(model: nn.Module, target_regex: str, towers: str) -> list[str]:
    """Full names of the Linear layers the adapters go on: ``target_regex`` (full match) within ``towers``.

    Raises ValueError if the regex reaches the pooling head or matches nothing."""
    pattern = re.compile(target_regex)
    prefixes = TOWER_PREFIXES[towers]
    names = [
        name
        for name, module in model.named_modules()
        if pattern.fullmatch(name) and name.startswith(prefixes) and _is_linear(module)
    ]
    in_head = [n for n in names if n.startswith(POOLING_HEAD + ".")]
    if in_head:
        raise ValueError(
            f"peft.target_modules matches the pooling head ({in_head[0]}); anchor it on encoder layers, "
            r"e.g. .*_model\.encoder\.layers\.\d+\.self_attn\.q_proj"
        )
    if not names:
        raise ValueError(
            f"peft.target_modules '{target_regex}' matches no Linear layer of the {towers} tower(s); "
            "it must fully match module names such as vision_model.encoder.layers.0.self_attn.q_proj"
        )
    return names


def _is_linear(module: nn.Module) -> bool:
    # bitsandbytes' Linear4bit subclasses nn.Linear.
    return isinstance(module, nn.Linear)


def upcast_non_quantized(model: nn.Module) -> None:
    """PEFT's prepare_model_for_kbit_training upcast, on request only: frozen non-4-bit floats to fp32."""
    for param in model.parameters():
        if param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.float()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit weight counts its real number of values."""
    trainable = total = 0
    for param in model.parameters():
        count = param.numel()
        quant_state = getattr(param, "quant_state", None)
        if quant_state is not None:  # Params4bit stores two values per uint8
            count = math.prod(quant_state.shape)
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total


def weight_memory_bytes(model: nn.Module) -> int:
    """Bytes the model's weights and buffers occupy as loaded (4-bit weights count their packed bytes)."""
    tensors = list(model.parameters()) + list(model.buffers())
    size = sum(t.numel() * t.element_size() for t in tensors)
    for param in model.parameters():  # quantization constants live outside the parameter
        quant_state = getattr(param, "quant_state", None)
        if quant_state is not None:
            size += quant_state.absmax.numel() * quant_state.absmax.element_size()
            if quant_state.nested:
                size += quant_state.state2.absmax.numel() * quant_state.state2.absmax.element_size()
    return size


def build_peft_siglip(config: RunConfig, plan: LoadPlan, targets: list[str] | None = None) -> PeftModel:
    """The base model with LoRA adapters; trainable: the adapters, plus logit scale/bias for the sigmoid loss.

    ``targets`` (full module names) defaults to what config.peft selects; a checkpoint passes its own list."""
    base = load_base_model(config, plan)
    init_logit_params(base, config.train.logit_bias_init)
    if plan.quantize and config.peft.upcast_non_quantized:
        upcast_non_quantized(base)
    if targets is None:
        targets = lora_target_names(base, config.peft.target_modules, config.peft.towers)
    lora = LoraConfig(
        r=config.peft.r,
        lora_alpha=config.peft.alpha,
        lora_dropout=config.peft.dropout,
        target_modules=targets,
        bias="none",
    )
    model = get_peft_model(base, lora)
    train_logits = config.train.loss == "sigmoid"
    for name in LOGIT_PARAMS:
        param = getattr(base, name)
        param.data = param.data.float()  # optimizer state and tiny updates want fp32
        param.requires_grad_(train_logits)
    if config.train.gradient_checkpointing:
        # Non-reentrant checkpointing needs no enable_input_require_grads trick for frozen embeddings.
        base.activation_checkpointing_enable({"use_reentrant": False})
    return model


def trainable_parameter_names(model: nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]
