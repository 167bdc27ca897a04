"""Where a run computes and in what precision: the accelerator, the Lightning precision, the torch device
of this process, and the dtype of the frozen weights. Every stage that trains or runs a model decides them
here, so training, evaluation and prediction agree.

``train.precision=auto`` means bf16-mixed on a GPU that supports bf16, else 32-true; on the CPU everything
is fp32.
"""

from __future__ import annotations

import os

import torch

from worker.config import TrainConfig


def resolve_accelerator(train: TrainConfig) -> str:
    if train.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if train.accelerator == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("train.accelerator=gpu but no CUDA device is visible; use train.accelerator=cpu or auto")
    return train.accelerator


def resolve_precision(train: TrainConfig, accelerator: str) -> str:
    if train.precision != "auto":
        return train.precision
    return "bf16-mixed" if accelerator == "gpu" and torch.cuda.is_bf16_supported() else "32-true"


def torch_device(accelerator: str) -> str:
    """This process's device: under DDP each rank has its own GPU (LOCAL_RANK)."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if accelerator == "gpu" else "cpu"


def weights_dtype_for(precision: str) -> torch.dtype:
    """Frozen weights follow the compute precision; autocast handles the fp32 adapters next to them."""
    return torch.bfloat16 if precision.startswith("bf16") else torch.float32
