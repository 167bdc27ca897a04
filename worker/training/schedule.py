"""The learning-rate schedule both LightningModules train with: linear warmup over ``warmup_steps``, then a
half cosine down to 0 at the last optimizer step, stepped once per optimizer step.

It is transformers' ``get_cosine_schedule_with_warmup`` rather than a hand-written lambda: the schedule the
Hugging Face training scripts use, maintained and tested there, so a run here is set up like the ones it is
compared with. Its warmup factor is ``step / warmup_steps``: the first optimizer step runs at LR 0.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import get_cosine_schedule_with_warmup


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> dict[str, Any]:
    """The ``lr_scheduler`` entry of ``configure_optimizers``: the schedule over ``total_steps`` (the
    Trainer's ``estimated_stepping_batches``), stepped after every optimizer step."""
    return {"scheduler": get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps), "interval": "step"}
