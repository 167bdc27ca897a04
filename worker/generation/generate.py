"""Batched report generation with the KV cache: beam search by default, greedy as an option."""

from __future__ import annotations

import warnings

import torch

from worker.config import GenerationConfig
from worker.generation.model import ReportCaptioner


def decoding_kwargs(gen: GenerationConfig, captioner: ReportCaptioner) -> dict:
    """generate() arguments for the configured decoding (deterministic either way)."""
    beams = gen.num_beams if gen.decoding == "beam" else 1
    return {
        "max_new_tokens": gen.max_new_tokens,
        "num_beams": beams,
        "do_sample": False,
        "no_repeat_ngram_size": gen.no_repeat_ngram_size,
        "eos_token_id": captioner.eos_id,
        "pad_token_id": captioner.pad_id,
        "use_cache": True,
        "early_stopping": beams > 1,
    }


@torch.no_grad()
def generate_reports(
    captioner: ReportCaptioner, features: torch.Tensor, tokenizer, gen: GenerationConfig, batch_size: int
) -> list[str]:
    """One decoded report per row of ``features`` (pooled [N, D] or patches [N, P, D])."""
    was_training = captioner.training
    captioner.eval()
    device = captioner.projector.gain.device
    kwargs = decoding_kwargs(gen, captioner)
    texts: list[str] = []
    for start in range(0, len(features), batch_size):
        prompt = captioner.prompt(features[start : start + batch_size].to(device))
        mask = torch.ones(prompt.shape[:2], dtype=torch.long, device=device)
        # Every prompt has the same length (K prefixes + start tokens): no padding, so positions are exact.
        # With inputs_embeds, generate() returns only the new tokens: nothing to slice off.
        with warnings.catch_warnings():
            # There is no prompt text for the n-gram block to see; blocking repeats in the output is the aim.
            warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
            ids = captioner.causal_lm.generate(inputs_embeds=prompt, attention_mask=mask, **kwargs)
        texts.extend(t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True))
    captioner.train(was_training)
    return texts
