"""The captioner: SigLIP image features become K prefix embeddings that BioGPT continues into a report.

Embedding scale: BioGPT multiplies token embeddings by sqrt(d_model) (``scale_embedding``). In the
installed transformers (5.x) ``get_input_embeddings()`` is ``BioGptScaledWordEmbedding``, whose forward
applies that scale, so ``embed(ids)`` below is exactly what BioGPT adds its positions to. The projector
ends in a LayerNorm and a learnable gain initialised to the mean norm of those scaled token embeddings,
so image prefixes enter the decoder at the same magnitude as words (sqrt(1024) = 32 for microsoft/biogpt).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from worker.base_models import base_source
from worker.config import GenerationConfig, RunConfig

IGNORE_INDEX = -100
# BioGPT's decoder Linear layers; the LM head (tied to the token embeddings) stays frozen and unquantized.
BIOGPT_LORA_TARGETS = r"biogpt\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)"
BIOGPT_SKIP_4BIT = ["output_projection"]


def pool_patches(patches: torch.Tensor, regions: int) -> torch.Tensor:
    """[N, P, D] patch states -> [N, regions, D] averages.

    A square patch grid and a square number of regions pool in 2-D (K=4: the image's quadrants, in
    row-major order); otherwise consecutive patches in raster order are averaged."""
    n, count, dim = patches.shape
    if count == regions:
        return patches
    side, region_side = math.isqrt(count), math.isqrt(regions)
    if side * side == count and region_side * region_side == regions and region_side <= side:
        grid = patches.transpose(1, 2).reshape(n, dim, side, side)
        return nn.functional.adaptive_avg_pool2d(grid, region_side).flatten(2).transpose(1, 2)
    return nn.functional.adaptive_avg_pool1d(patches.transpose(1, 2), regions).transpose(1, 2)


def feature_statistics(chunks: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and sample std (n - 1, as ``Tensor.std``) over every row of every chunk
    [n, ..., D], in one pass: each chunk's mean and sum of squared deviations, merged in float64 (Chan et al.'s
    pairwise update), so the result does not depend on the chunking beyond rounding."""
    count, mean, squares = 0, None, None
    for chunk in chunks:
        flat = chunk.reshape(-1, chunk.shape[-1]).to(torch.float64, copy=True)  # modified in place below
        n = len(flat)
        if n == 0:
            continue
        chunk_mean = flat.mean(0)
        chunk_squares = flat.sub_(chunk_mean).square_().sum(0)
        if mean is None:
            count, mean, squares = n, chunk_mean, chunk_squares
            continue
        total = count + n
        delta = chunk_mean - mean
        mean = mean + delta * (n / total)
        squares = squares + chunk_squares + delta.square() * (count * n / total)
        count = total
    if mean is None or squares is None:
        raise ValueError("no feature rows to compute statistics over")
    return mean.float(), (squares / (count - 1)).sqrt().float()


class PrefixProjector(nn.Module):
    """SigLIP features -> [N, K, H] prefix embeddings.

    pooled features [N, D]: one MLP (or Linear) maps D to K*H.
    patch features [N, P, D]: patches are average-pooled to K regions (``pool_patches``), then each
    region is mapped D -> H by the same MLP (or Linear).
    Features are first standardised per dimension with training-set statistics (``fit_normalization``):
    a SigLIP's pooled embeddings of different X-rays are nearly parallel (mean pairwise cosine about 0.98
    for the tiny model), so the signal is in small deviations that a raw MLP input would drown.
    """

    def __init__(self, feature_dim: int, width: int, prefix_tokens: int, kind: str, features: str):
        super().__init__()
        self.prefix_tokens = prefix_tokens
        self.width = width
        self.features = features
        out = width * prefix_tokens if features == "pooled" else width
        if kind == "mlp":
            hidden = max(width, feature_dim)
            self.net: nn.Module = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU(), nn.Linear(hidden, out))
        else:
            self.net = nn.Linear(feature_dim, out)
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.gain = nn.Parameter(torch.ones(()))
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    @torch.no_grad()
    def fit_normalization(self, features: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Per-dimension mean and std over the training studies (and patches): of one tensor, or of the
        chunks of rows an iterable gives (a features file streamed, never all in memory at once)."""
        mean, std = feature_statistics([features] if isinstance(features, torch.Tensor) else features)
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = (features - self.feature_mean) / self.feature_std
        if self.features == "pooled":
            if features.ndim != 2:
                raise ValueError(f"pooled features must be [N, D], got {tuple(features.shape)}")
            prefix = self.net(features).view(len(features), self.prefix_tokens, self.width)
        else:
            if features.ndim != 3:
                raise ValueError(f"patch features must be [N, P, D], got {tuple(features.shape)}")
            prefix = self.net(pool_patches(features, self.prefix_tokens))
        return self.norm(prefix) * self.gain


def _load_biogpt(config: RunConfig, quantize: bool, compute_dtype: torch.dtype, device: str) -> PreTrainedModel:
    path, pinned = base_source(config, "biogpt")
    # Frozen weights in the compute dtype (bf16 under bf16-mixed), as the SigLIP stage stores its frozen base,
    # so LoRA and QLoRA differ only by quantization; fully tuned weights stay fp32 for the optimizer.
    frozen = config.generation.biogpt_tuning != "full"
    kwargs: dict = {"dtype": compute_dtype if frozen else torch.float32, **pinned}
    if quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=config.peft.double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=BIOGPT_SKIP_4BIT,
        )
        kwargs["dtype"] = compute_dtype
        kwargs["device_map"] = {"": device}  # a 4-bit model refuses .to(); place it at load time
    try:
        model = AutoModelForCausalLM.from_pretrained(path, token=os.environ.get("HF_TOKEN"), **kwargs)
    except OSError as exc:
        raise RuntimeError(
            f"cannot load BioGPT from '{config.model.biogpt}' ({exc.__class__.__name__}); check the path or hub id,"
            " or set model.build_tiny_fixtures=true for the offline smoke preset"
        ) from exc
    if quantize and device == "cpu":
        from worker.siglip.model import disable_cpu_inference_packing

        disable_cpu_inference_packing(model)
    return model


def _adapt(model: PreTrainedModel, gen: GenerationConfig) -> nn.Module:
    """LoRA (also on a 4-bit base) or full fine-tuning of BioGPT."""
    if gen.biogpt_tuning == "full":
        model.requires_grad_(True)
        return model
    lora = LoraConfig(
        r=gen.lora_r, lora_alpha=gen.lora_alpha, lora_dropout=0.0, target_modules=BIOGPT_LORA_TARGETS, bias="none"
    )
    return get_peft_model(model, lora)


class ReportCaptioner(nn.Module):
    """Projector + (adapted) BioGPT. Inputs are precomputed SigLIP features: the vision tower is frozen."""

    def __init__(self, projector: PrefixProjector, lm: nn.Module, start_ids: list[int], eos_id: int, pad_id: int):
        super().__init__()
        self.projector = projector
        self.lm = lm
        self.start_ids = start_ids
        self.eos_id = eos_id
        self.pad_id = pad_id

    @property
    def causal_lm(self) -> PreTrainedModel:
        """The HF model (LoRA layers sit inside it); forward and generate go through it."""
        return self.lm.get_base_model() if isinstance(self.lm, PeftModel) else self.lm

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings as BioGPT itself computes them (scale included, see the module docstring)."""
        return self.causal_lm.get_input_embeddings()(input_ids)

    def prefix(self, features: torch.Tensor) -> torch.Tensor:
        dtype = self.embed(torch.zeros(1, 1, dtype=torch.long, device=features.device)).dtype
        return self.projector(features.float()).to(dtype)

    def init_prefix_gain(self) -> None:
        """Start the prefix at the mean norm of BioGPT's scaled token embeddings (per-dimension RMS)."""
        with torch.no_grad():
            vocab = torch.arange(self.causal_lm.config.vocab_size, device=self.projector.gain.device)
            norms = self.embed(vocab).float().norm(dim=-1)
            self.projector.gain.fill_(norms.mean().item() / math.sqrt(self.projector.width))

    def forward(
        self, features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy of the report; the K prefix positions carry no loss."""
        prefix = self.prefix(features)
        batch, k = prefix.shape[:2]
        inputs = torch.cat([prefix, self.embed(input_ids)], dim=1)
        mask = torch.cat([attention_mask.new_ones(batch, k), attention_mask], dim=1)
        ignored = labels.new_full((batch, k), IGNORE_INDEX)
        out = self.causal_lm(inputs_embeds=inputs, attention_mask=mask, labels=torch.cat([ignored, labels], dim=1))
        return out.loss

    def prompt(self, features: torch.Tensor) -> torch.Tensor:
        """Prefix embeddings followed by the tokens every target starts with (BioGPT: ``</s>``)."""
        prefix = self.prefix(features)
        start = torch.tensor(self.start_ids, device=features.device).expand(len(features), -1)
        return torch.cat([prefix, self.embed(start)], dim=1)


def tokenizer_specials(tokenizer) -> tuple[list[int], int, int]:
    """(ids the tokenizer puts before a text, end-of-text id, padding id)."""
    start_ids = tokenizer("", add_special_tokens=True)["input_ids"]
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos token; the generator cannot learn where to stop")
    if not start_ids:
        start_ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos_id]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    return list(start_ids), int(eos_id), int(pad_id)


def build_captioner(
    config: RunConfig, tokenizer, feature_dim: int, *, compute_dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> ReportCaptioner:
    """BioGPT from config.model.biogpt, adapted per config.generation, behind a fresh projector."""
    gen = config.generation
    quantize = gen.biogpt_tuning == "qlora"
    base = _load_biogpt(config, quantize, compute_dtype, device)
    base.requires_grad_(False)
    lm = _adapt(base, gen)
    projector = PrefixProjector(feature_dim, base.config.hidden_size, gen.prefix_tokens, gen.projector, gen.features)
    captioner = ReportCaptioner(projector, lm, *tokenizer_specials(tokenizer))
    if not quantize:
        captioner.to(device)
    else:
        captioner.projector.to(device)
    captioner.init_prefix_gain()
    return captioner
