"""The learning-rate schedule both LightningModules train with: linear warmup over ``warmup_steps``, then a
half cosine down to 0 at the last optimizer step, stepped once per optimizer step.

It is transformers' ``get_cosine_schedule_with_warmup`` rather than a hand-written lambda: the schedule the
Hugging Face training scripts use, maintained and tested there, so a run here is set up like the ones it is
compared with.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import get_cosine_schedule_with_warmup


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> dict[str, Any]:
    """The ``lr_scheduler`` entry of ``configure_optimizers``: the schedule over ``total_steps`` (the
    Trainer's ``estimated_stepping_batches``), stepped after every optimizer step.

    Optimizer step s (from 0) runs at (s + 1) / (warmup_steps + 1) of the LR during warmup, then at
    0.5 * (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps))), as this project has always
    trained: transformers' factor is s / warmup, which would run the first step at LR 0 and change every
    run's numbers. Its factor one step later, with warmup and total one step longer, is exactly this
    schedule, so the scheduler starts one step in (``last_epoch=0``, which needs ``initial_lr`` set)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps + 1, total_steps + 1, last_epoch=0)
    return {"scheduler": scheduler, "interval": "step"}
