"""Training-step speed and memory: the product's LoRA/QLoRA steps against hand-written HF+PEFT loops.

Three models, built from their real configurations with random weights (saved once under
var/bench/models and loaded with ``from_pretrained`` like a hub checkpoint; nothing is downloaded):
  siglip-base-224   google/siglip-base-patch16-224           GPU batch 64
  medsiglip-448     the MedSigLIP-448 shape (SigLIP so400m towers at 448 px)   GPU batch 16
  biogpt            microsoft/biogpt, 128 tokens              GPU batch 16

Variants of each, run one after another in this process on the same weights, batch and precision:
  product-*   the product's own code: worker.siglip (build_peft_siglip + SiglipContrastiveModule) or
              worker.generation (build_captioner + ReportGenModule), driven by a Lightning Trainer exactly
              as the stages drive it, with the preset's settings (iu-xray, or medsiglip for the 448 shape).
              "+gc" / "+compile" flip train.gradient_checkpointing / train.compile.
  plain-*     what a user writes from the HF and PEFT docs: library defaults, LoRA dropout 0.1, r=16 on
              q/k/v/out of the encoder layers, prepare_model_for_kbit_training for QLoRA (fp32 upcast and
              gradient checkpointing on), AdamW, autocast.
  tuned-*     the same loop tuned by hand: LoRA dropout 0, SDPA attention, torch.compile (where it works),
              QLoRA without the fp32 upcast; "+gc" adds non-reentrant gradient checkpointing.

On a GPU: bf16 weights under bf16 autocast, the batch sizes the targets are set for, every layer. On the CPU (no GPU):
fp32, a few encoder layers, tiny batches and few steps, no torch.compile unless --compile on: the
figures show the code paths run and how variants compare on a CPU, not GPU speed. Targets are evaluated
only on a GPU.

Run: python -m bench.train_step [--models siglip-base-224,biogpt] [--variants product-lora,plain-lora]
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    MB,
    REPO,
    add_device_option,
    check,
    median_after_warmup,
    parser,
    print_checks,
    print_table,
    resolve_device,
    write_results,
)

MODELS_DIR = REPO / "var" / "bench" / "models"
TEXT_TOKENS = 64  # SigLIP's text length (max_position_embeddings of both SigLIP configs)
LR = 1e-4
LORA_R, LORA_ALPHA = 16, 32
PLAIN_DROPOUT = 0.1  # the value HF/PEFT tutorials use; PEFT's own default is 0.0
SIGLIP_REFERENCE_TARGETS = r".*_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
BIOGPT_REFERENCE_TARGETS = r"biogpt\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
SIGLIP_4BIT_SKIP = ["vision_model.head"]  # nn.MultiheadAttention breaks in 4-bit (docs/architecture.md)
BIOGPT_4BIT_SKIP = ["output_projection"]

SIGLIP_TOWER_BASE = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}
SIGLIP_TOWER_400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                     "num_attention_heads": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}
SIGLIP_TEXT = {"vocab_size": 32000, "max_position_embeddings": TEXT_TOKENS, "pad_token_id": 1, "bos_token_id": 49406,
               "eos_token_id": 1}
BIOGPT_CONFIG = {"vocab_size": 42384, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                 "intermediate_size": 4096, "hidden_act": "gelu", "max_position_embeddings": 1024,
                 "scale_embedding": True, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
                 "attention_probs_dropout_prob": 0.1, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "siglip" or "biogpt"
    preset: str  # the product preset whose train/generation settings the product variants use
    config: dict[str, Any]
    gpu_batch: int
    cpu_batch: int
    cpu_layers: int
    image_size: int = 0
    seq_len: int = 0

    def hf_config(self, layers: int | None):
        """The transformers config, optionally cut to ``layers`` encoder/decoder layers (CPU mode)."""
        from transformers import BioGptConfig, SiglipConfig

        if self.kind == "biogpt":
            values = dict(self.config)
            if layers:
                values["num_hidden_layers"] = layers
            return BioGptConfig(**values)
        text, vision = dict(self.config["text_config"]), dict(self.config["vision_config"])
        if layers:
            text["num_hidden_layers"] = vision["num_hidden_layers"] = layers
        return SiglipConfig(text_config=text, vision_config=vision)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("siglip-base-224", "siglip", "iu-xray",
                  {"text_config": {**SIGLIP_TOWER_BASE, **SIGLIP_TEXT},
                   "vision_config": {**SIGLIP_TOWER_BASE, "image_size": 224, "patch_size": 16}},
                  gpu_batch=64, cpu_batch=2, cpu_layers=1, image_size=224),
        ModelSpec("medsiglip-448", "siglip", "medsiglip",
                  {"text_config": {**SIGLIP_TOWER_400M, **SIGLIP_TEXT},
                   "vision_config": {**SIGLIP_TOWER_400M, "image_size": 448, "patch_size": 14}},
                  gpu_batch=16, cpu_batch=2, cpu_layers=1, image_size=448),
        ModelSpec("biogpt", "biogpt", "iu-xray", BIOGPT_CONFIG, gpu_batch=16, cpu_batch=2, cpu_layers=1,
                  seq_len=128),
    )
}

SIGLIP_REFERENCES = ("plain-full", "plain-lora", "plain-qlora", "tuned-lora", "tuned-qlora", "tuned-lora+gc",
                     "tuned-qlora+gc")
BIOGPT_VARIANTS = ("product-lora", "product-qlora", "product-full", "plain-full", "plain-lora", "plain-qlora",
                   "tuned-lora", "tuned-qlora")


@dataclass
class Mode:
    """Where and how big: the GPU with the shapes the targets are set for, or the CPU with smaller ones."""

    device: str
    warmup: int
    steps: int
    compile: bool
    full_depth: bool
    batch_override: int | None = None  # bench/fits.py searches batch sizes
    fp32: bool = False  # keep fp32 weights on the GPU too (bench/generate.py: what the evaluate stage loads)
    reference_targets: str = "qkvo"  # or "product": the reference loops adapt the same layers as the product

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    def batch(self, spec: ModelSpec) -> int:
        if self.batch_override:
            return self.batch_override
        return spec.gpu_batch if self.gpu else spec.cpu_batch

    def layers(self, spec: ModelSpec) -> int | None:
        return None if self.full_depth else spec.cpu_layers

    @property
    def dtype(self):
        import torch

        return torch.bfloat16 if self.gpu and not self.fp32 else torch.float32


@dataclass
class Variant:
    name: str
    family: str  # product / plain / tuned
    method: str  # full / lora / qlora
    gc: bool | None = None  # None: the family's default (the preset's, PEFT's, or off)
    compile: bool = False

    @classmethod
    def parse(cls, name: str) -> Variant:
        """``family-method[+gc|+nogc][+compile]``, e.g. product-qlora+nogc or tuned-lora+gc."""
        family, _, rest = name.partition("-")
        method, *flags = rest.split("+")
        gc = True if "gc" in flags else False if "nogc" in flags else None
        return cls(name, family, method, gc=gc, compile="compile" in flags)


@dataclass
class Measurement:
    step_s: list[float] = field(default_factory=list)
    weight_bytes: int = 0
    trainable: int = 0
    total: int = 0
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


# --- models on disk ----------------------------------------------------------------------------------------


def ensure_checkpoint(spec: ModelSpec, mode: Mode) -> Path:
    """Random-init weights of the real configuration, saved once (in the run's dtype) for from_pretrained."""
    import torch
    from transformers import BioGptForCausalLM, SiglipModel

    layers = mode.layers(spec)
    dtype_name = str(mode.dtype).removeprefix("torch.")
    path = MODELS_DIR / f"{spec.name}-{layers or 'all'}L-{dtype_name}"
    if (path / "config.json").is_file():
        return path
    model_class = BioGptForCausalLM if spec.kind == "biogpt" else SiglipModel
    torch.manual_seed(0)
    with torch.device(mode.device):  # initialising on the GPU is much faster for the 400M-per-tower shape
        model = model_class(spec.hf_config(layers)).to(mode.dtype)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tmp.rename(path)
    del model
    return path


# --- synthetic batches -------------------------------------------------------------------------------------


def siglip_batch(spec: ModelSpec, batch: int, device: str) -> dict[str, Any]:
    import torch

    vocab = spec.config["text_config"]["vocab_size"]
    return {
        "pixel_values": torch.randn(batch, 3, spec.image_size, spec.image_size, device=device),
        "input_ids": torch.randint(2, vocab, (batch, TEXT_TOKENS), device=device),
        "text_id": torch.arange(batch, device=device),
        "index": torch.arange(batch, device=device),
    }


def biogpt_batch(spec: ModelSpec, batch: int, device: str, feature_dim: int = 768) -> dict[str, Any]:
    import torch

    ids = torch.randint(4, spec.config["vocab_size"], (batch, spec.seq_len), device=device)
    return {
        "features": torch.randn(batch, feature_dim, device=device),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids.clone(),
        "index": torch.arange(batch, device=device),
    }


# --- the product's step, through Lightning -----------------------------------------------------------------


class BioGptSpecialIds:
    """microsoft/biogpt's special token ids (bos 0, pad 1, eos 2; a text starts with </s>): all that
    build_captioner reads from a tokenizer. The step never tokenizes text; its ids are random."""

    bos_token_id, pad_token_id, eos_token_id = 0, 1, 2

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [self.eos_token_id] if add_special_tokens else []}


def product_config(spec: ModelSpec, variant: Variant, checkpoint: Path, mode: Mode):
    from worker.config import load_config

    overrides: dict[str, Any] = {
        "train.accelerator": "gpu" if mode.gpu else "cpu",
        "train.batch_size": mode.batch(spec),
        "train.compile": variant.compile,
        "train.warmup_steps": 0,
    }
    if spec.kind == "siglip":
        overrides.update({"model.siglip": str(checkpoint), "model.requires_hf_token": False,
                          "peft.method": variant.method, "train.max_text_length": TEXT_TOKENS})
        if variant.gc is not None:
            overrides["train.gradient_checkpointing"] = variant.gc
    else:
        overrides.update({"model.biogpt": str(checkpoint), "generation.biogpt_tuning": variant.method,
                          "generation.batch_size": mode.batch(spec), "generation.max_target_tokens": spec.seq_len})
    return load_config(spec.preset, overrides)


def product_module(spec: ModelSpec, variant: Variant, checkpoint: Path, mode: Mode, out: Measurement):
    """The LightningModule the stage would train, built with the stage's own functions and settings."""
    import torch

    from worker.siglip.model import count_parameters, weight_memory_bytes
    from worker.training.device import resolve_accelerator, resolve_precision

    config = product_config(spec, variant, checkpoint, mode)
    accelerator = resolve_accelerator(config.train)
    precision = resolve_precision(config.train, accelerator)
    if spec.kind == "siglip":
        from worker.siglip.model import LoadPlan, build_peft_siglip
        from worker.siglip.module import SiglipContrastiveModule
        from worker.training.device import weights_dtype_for

        # The same plan run_training makes (worker/siglip/stage.py) for one device.
        plan = LoadPlan(quantize=config.peft.method == "qlora", weights_dtype=weights_dtype_for(precision),
                        device_map={"": 0 if accelerator == "gpu" else "cpu"})
        model = build_peft_siglip(config, plan)
        targets = sorted(model.peft_config["default"].target_modules)
        module = SiglipContrastiveModule(config, model, targets, val_texts=[])
        counted = model
        out.settings.update(gradient_checkpointing=config.train.gradient_checkpointing, compile=config.train.compile,
                            lora_dropout=config.peft.dropout, lora_targets=len(targets),
                            upcast_non_quantized=config.peft.upcast_non_quantized)
    else:
        from worker.generation.model import build_captioner
        from worker.generation.module import ReportGenModule
        from worker.training.device import torch_device

        # The same dtype and device train_full chooses (worker/generation/stage.py).
        compute_dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
        captioner = build_captioner(config, BioGptSpecialIds(), 768, compute_dtype=compute_dtype,
                                    device=torch_device(accelerator))
        module = ReportGenModule(config, captioner, siglip_checkpoint="(benchmark: random features)", feature_dim=768)
        counted = captioner
        out.settings.update(prefix_tokens=config.generation.prefix_tokens)
    out.settings.update(precision=precision, preset=config.preset)
    out.weight_bytes = weight_memory_bytes(counted)
    out.trainable, out.total = count_parameters(counted)
    return module, accelerator, precision


def fit_steps(module, batch: dict[str, Any], accelerator: str, precision: str, mode: Mode) -> list[float]:
    """Lightning Trainer.fit over ``warmup + steps`` copies of one batch; each step timed from batch start
    to batch end (forward, backward, optimizer step), the GPU synchronised at both ends."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    total = mode.warmup + mode.steps

    class Repeat(IterableDataset):
        def __iter__(self) -> Iterator[dict[str, Any]]:
            return iter([batch] * total)

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.durations: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, *args: Any) -> None:
            _sync(mode)
            self._start = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            _sync(mode)
            self.durations.append(time.perf_counter() - self._start)

    timer = StepTimer()
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=total, max_epochs=1,
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|IterableDataset).*")
        trainer.fit(module, train_dataloaders=DataLoader(Repeat(), batch_size=None))
    del trainer
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return timer.durations


# --- the reference loops -----------------------------------------------------------------------------------


def reference_model(spec: ModelSpec, variant: Variant, checkpoint: Path, mode: Mode, out: Measurement):
    """A hand-written HF+PEFT setup: ``plain`` with library defaults, ``tuned`` with the known fixes."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModel, AutoModelForCausalLM, BitsAndBytesConfig

    from worker.siglip.model import count_parameters, weight_memory_bytes

    tuned = variant.family == "tuned"
    quantize = variant.method == "qlora"
    kwargs: dict[str, Any] = {"dtype": mode.dtype}
    if tuned:
        kwargs["attn_implementation"] = "sdpa"
    if quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=mode.dtype,
            llm_int8_skip_modules=SIGLIP_4BIT_SKIP if spec.kind == "siglip" else BIOGPT_4BIT_SKIP)
        kwargs["device_map"] = {"": mode.device}
    loader = AutoModelForCausalLM if spec.kind == "biogpt" else AutoModel
    model = loader.from_pretrained(str(checkpoint), **kwargs)
    if quantize and not mode.gpu:
        from worker.siglip.model import disable_cpu_inference_packing

        disable_cpu_inference_packing(model)  # bitsandbytes' CPU packing has no backward
    gc_on = bool(variant.gc)
    if variant.method == "full":
        model.requires_grad_(True)
    else:
        if quantize and not tuned:
            model = prepare_model_for_kbit_training(model)  # PEFT's defaults: fp32 upcast, checkpointing on
            gc_on = True
        elif gc_on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        targets = reference_targets(spec, mode.reference_targets)
        lora = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=targets, bias="none",
                          lora_dropout=0.0 if tuned else PLAIN_DROPOUT)
        model = get_peft_model(model, lora)
    if not quantize:
        model.to(mode.device)
    model.train()
    out.weight_bytes = weight_memory_bytes(model)
    out.trainable, out.total = count_parameters(model)
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    out.settings.update(gradient_checkpointing=gc_on, lora_dropout=0.0 if tuned else PLAIN_DROPOUT,
                        attn_implementation=attn, upcast_non_quantized=quantize and not tuned,
                        precision="bf16 autocast" if mode.gpu else "fp32")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    return model, optimizer


def reference_targets(spec: ModelSpec, choice: str) -> str:
    """q/k/v/out of every encoder/decoder layer (as the reference figures' loops), or the product's own regex."""
    if choice == "product":
        from worker.config import PeftConfig
        from worker.generation.model import BIOGPT_LORA_TARGETS

        return BIOGPT_LORA_TARGETS if spec.kind == "biogpt" else PeftConfig().target_modules
    return BIOGPT_REFERENCE_TARGETS if spec.kind == "biogpt" else SIGLIP_REFERENCE_TARGETS


def reference_steps(spec: ModelSpec, variant: Variant, model, optimizer, batch: dict[str, Any], mode: Mode,
                    out: Measurement) -> list[float]:
    import torch

    inputs = ({"pixel_values": batch["pixel_values"], "input_ids": batch["input_ids"], "return_loss": True}
              if spec.kind == "siglip" else {"input_ids": batch["input_ids"],
                                             "attention_mask": batch["attention_mask"], "labels": batch["labels"]})
    forward = model
    use_compile = variant.family == "tuned" and mode.compile
    if use_compile:
        forward = torch.compile(model)
    out.settings["compile"] = use_compile

    def step() -> None:
        with torch.autocast(mode.device, dtype=torch.bfloat16, enabled=mode.gpu):
            loss = forward(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    durations: list[float] = []
    for _ in range(mode.warmup + mode.steps):
        _sync(mode)
        started = time.perf_counter()
        try:
            step()
        except Exception as exc:  # torch.compile "where it works": fall back to eager and say so
            if forward is model:
                raise
            out.notes.append(f"torch.compile failed ({exc.__class__.__name__}); eager instead")
            out.settings["compile"] = False
            forward = model
            optimizer.zero_grad(set_to_none=True)
            step()
        _sync(mode)
        durations.append(time.perf_counter() - started)
    return durations


# --- one variant, one row ----------------------------------------------------------------------------------


def _sync(mode: Mode) -> None:
    if mode.gpu:
        import torch

        torch.cuda.synchronize()


@contextlib.contextmanager
def fresh_memory(mode: Mode) -> Iterator[None]:
    import torch

    gc.collect()
    if mode.gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        gc.collect()
        if mode.gpu:
            torch.cuda.empty_cache()


def measure_variant(spec: ModelSpec, variant: Variant, checkpoint: Path, mode: Mode) -> dict[str, Any]:
    import torch

    out = Measurement()
    batch_size = mode.batch(spec)
    row: dict[str, Any] = {"model": spec.name, "variant": variant.name, "family": variant.family,
                           "method": variant.method, "batch": batch_size, "default": False}
    peak_alloc = peak_reserved = None
    try:
        with fresh_memory(mode):
            batch = (siglip_batch if spec.kind == "siglip" else biogpt_batch)(spec, batch_size, mode.device)
            if variant.family == "product":
                module, accelerator, precision = product_module(spec, variant, checkpoint, mode, out)
                if mode.gpu:  # training memory, not the transient of loading and quantizing
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                out.step_s = fit_steps(module, batch, accelerator, precision, mode)
                del module
            else:
                model, optimizer = reference_model(spec, variant, checkpoint, mode, out)
                if mode.gpu:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                out.step_s = reference_steps(spec, variant, model, optimizer, batch, mode, out)
                del model, optimizer
            if mode.gpu:
                peak_alloc = torch.cuda.max_memory_allocated() / MB
                peak_reserved = torch.cuda.max_memory_reserved() / MB
            del batch
    except Exception as exc:  # one failing variant (OOM, unsupported combination) must not hide the others
        row["error"] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        logging.getLogger(__name__).warning("%s %s failed: %s", spec.name, variant.name, row["error"])
        return row
    step = median_after_warmup(out.step_s, mode.warmup)
    row.update(step_ms=step * 1000, samples_per_s=batch_size / step, peak_alloc_mb=peak_alloc,
               peak_reserved_mb=peak_reserved, weight_mb=out.weight_bytes / MB, trainable_params=out.trainable,
               total_params=out.total, steps_timed=len(out.step_s) - mode.warmup,
               step_ms_all=[round(s * 1000, 2) for s in out.step_s], settings=out.settings)
    if out.notes:
        row["notes"] = out.notes
    return row


# --- targets -----------------------------------------------------------------------------------------------


def _row(rows: list[dict[str, Any]], model: str, variant: str) -> dict[str, Any] | None:
    found = next((r for r in rows if r["model"] == model and r["variant"] == variant), None)
    return found if found and "error" not in found else None


def _value(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else row.get(key)


def evaluate_targets(rows: list[dict[str, Any]], mode: Mode) -> list[dict[str, Any]]:
    """The throughput and memory targets, per model, on the GPU only (CPU shapes say nothing about GPU speed)."""
    checks: list[dict[str, Any]] = []
    skipped = None if mode.gpu else "CPU run with smaller shapes: targets are for the GPU"
    for model in dict.fromkeys(r["model"] for r in rows):
        spec = MODELS[model]
        default_gc = preset_uses_gc(spec)
        lora = _row(rows, model, "product-lora")
        qlora = _row(rows, model, "product-qlora")
        # Like with like: the tuned loop with the same gradient-checkpointing setting as the product's default.
        tuned_name = "tuned-lora+gc" if default_gc else "tuned-lora"
        thr = _value(lora, "samples_per_s")
        for name, factor in ((tuned_name, 1.25), ("plain-lora", 2.3)):
            ref = _value(_row(rows, model, name), "samples_per_s")
            checks.append(check(f"{model}: product LoRA >= {factor}x {name} throughput", thr,
                                None if ref is None else factor * ref, unit="samples/s", why_skipped=skipped))
        checks.append(check(f"{model}: product QLoRA >= 0.75x product LoRA throughput", _value(qlora, "samples_per_s"),
                            None if thr is None else 0.75 * thr, unit="samples/s", why_skipped=skipped))
        flip = "" if spec.kind == "biogpt" else ("+nogc" if default_gc else "+gc")
        for suffix in dict.fromkeys(("", flip)):
            pair = _row(rows, model, f"product-lora{suffix}"), _row(rows, model, f"product-qlora{suffix}")
            checks.append(memory_check(model, *pair, skipped))
    return checks


def memory_check(model: str, lora: dict[str, Any] | None, qlora: dict[str, Any] | None,
                 skipped: str | None) -> dict[str, Any]:
    """QLoRA's peak memory below LoRA's by at least 80% of the weight memory quantization saves."""
    settings = "" if lora is None else (" (gc on)" if lora["settings"].get("gradient_checkpointing") else " (gc off)")
    name = f"{model}{settings}: LoRA peak - QLoRA peak >= 0.8 x weight saving"
    if lora is None or qlora is None or lora.get("peak_alloc_mb") is None:
        return check(name, None, None, why_skipped=skipped or "variant missing or failed")
    saving = lora["weight_mb"] - qlora["weight_mb"]
    return check(name, lora["peak_alloc_mb"] - qlora["peak_alloc_mb"], 0.8 * saving, unit="MB")


# --- main --------------------------------------------------------------------------------------------------


def quiet_libraries() -> None:
    """One line per variant instead of Lightning's banners, loading bars and deprecation warnings."""
    import lightning  # noqa: F401  (sets its loggers' levels on import; ours must come after)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    for noisy in ("lightning.pytorch", "lightning.fabric", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*(use_reentrant|LeafSpec|validation_step|no `val_dataloader`).*")


def preset_uses_gc(spec: ModelSpec) -> bool:
    from worker.config import load_config

    return spec.kind == "siglip" and load_config(spec.preset).train.gradient_checkpointing


def variant_names(spec: ModelSpec) -> tuple[str, ...]:
    """The product as its preset sets it, then with gradient checkpointing flipped, then the references."""
    if spec.kind == "biogpt":
        return BIOGPT_VARIANTS
    flip = "+nogc" if preset_uses_gc(spec) else "+gc"
    product = ("product-lora", "product-qlora", f"product-lora{flip}", f"product-qlora{flip}", "product-lora+compile")
    return product + SIGLIP_REFERENCES


def mark_defaults(rows: list[dict[str, Any]]) -> None:
    """The product variants whose settings are exactly the preset's (nothing flipped by the benchmark)."""
    for row in rows:
        row["default"] = row["family"] == "product" and "+" not in row["variant"] and "error" not in row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n\n")[0])
    add_device_option(p)
    p.add_argument("--models", default=",".join(MODELS), help=f"Comma-separated, from: {', '.join(MODELS)}.")
    p.add_argument("--variants", default="all", help="Comma-separated variant names (default: all of each model's).")
    p.add_argument("--steps", type=int, default=None, help="Timed steps (default: 10 on a GPU, 2 on the CPU).")
    p.add_argument("--warmup", type=int, default=None, help="Untimed first steps (default: 3 on a GPU, 1 on the CPU).")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile in the tuned loops (auto: on a GPU only; on the CPU it costs minutes).")
    p.add_argument("--full-depth", action="store_true", help="Every layer on the CPU too (slow; the GPU always is).")
    p.add_argument("--reference-targets", choices=("qkvo", "product"), default="qkvo",
                   help="Layers the plain/tuned loops adapt: q/k/v/out (as in the reference figures), or the "
                        "product's own set (q/k/v/out + fc1/fc2).")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    gpu = device == "cuda"
    mode = Mode(device=device, warmup=args.warmup if args.warmup is not None else (3 if gpu else 1),
                steps=args.steps if args.steps is not None else (10 if gpu else 2),
                compile=args.compile == "on" or (args.compile == "auto" and gpu), full_depth=gpu or args.full_depth,
                reference_targets=args.reference_targets)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    wanted = None if args.variants == "all" else {v.strip() for v in args.variants.split(",")}
    quiet_libraries()
    if not gpu:
        shapes = ", ".join(f"{m} {MODELS[m].cpu_layers} layer(s) batch {MODELS[m].cpu_batch}" for m in chosen)
        print(f"CPU mode (no GPU): fp32, {shapes}; "
              f"{mode.warmup} warm-up + {mode.steps} timed steps; compile {'on' if mode.compile else 'off'}. "
              "These are not GPU figures and no target is evaluated.")

    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in chosen:
        spec = MODELS[name]
        checkpoint = ensure_checkpoint(spec, mode)
        for variant_name in variant_names(spec):
            if wanted is not None and variant_name not in wanted:
                continue
            if "+compile" in variant_name and not mode.compile:
                print(f"  {name} {variant_name}: skipped (torch.compile is off; --compile on to include it)")
                continue
            row = measure_variant(spec, Variant.parse(variant_name), checkpoint, mode)
            print(f"  {name} {variant_name}: " + (row.get("error") or
                  f"{row['step_ms']:.1f} ms/step, {row['samples_per_s']:.2f} samples/s"), flush=True)
            rows.append(row)
    mark_defaults(rows)
    checks = evaluate_targets(rows, mode)
    columns = ["model", "variant", "batch", "step_ms", "samples_per_s", "peak_alloc_mb", "peak_reserved_mb",
               "weight_mb", "trainable_params"]
    print_table(f"Training step ({'GPU' if gpu else 'CPU, smaller shapes'})", rows, columns)
    print_checks(checks)
    payload = {
        "mode": "gpu" if gpu else "cpu",
        "shapes": {name: {"batch": mode.batch(MODELS[name]), "layers": mode.layers(MODELS[name]) or "all",
                          "image_size": MODELS[name].image_size or None, "seq_len": MODELS[name].seq_len or None}
                   for name in chosen},
        "warmup_steps": mode.warmup,
        "timed_steps": mode.steps,
        "compile_in_tuned": mode.compile,
        "reference_targets": mode.reference_targets,
        "dtype": str(mode.dtype).removeprefix("torch."),
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
        "targets": checks,
    }
    write_results("train_step", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
