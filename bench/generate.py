"""Reports per second: the evaluation stage's batched beam search against one study at a time.

Both sides call the product's ``worker.generation.generate.generate_reports`` on a captioner built with the
product's ``build_captioner`` (as ``load_report_model`` builds it for the evaluate stage), with the
iu-xray preset's decoding settings (beam search, 3 beams, up to 60 new tokens, no repeated 3-grams);
only ``batch_size`` differs: the preset's ``generation.eval_batch_size`` against 1.

BioGPT has random weights (its real configuration, no download; the LM head untied from the token
embeddings, see ``build``) and the image features are random, so the model rarely emits end-of-text:
nearly every report runs to max_new_tokens. That is the slow end of real decoding, and the same for
both sides. On a GPU: the whole model. On the CPU: one decoder layer
and fewer studies (say so in the output); the LM head and the decoding loop are full size.

Run: python -m bench.generate [--studies 64] [--device cpu]
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any

from bench._common import add_device_option, check, parser, print_checks, print_table, resolve_device, write_results
from bench.train_step import BIOGPT_CONFIG, MODELS, BioGptSpecialIds, Mode, ensure_checkpoint, quiet_libraries

FEATURE_DIM = 768  # SigLIP-base's pooled width


class IdsAsText(BioGptSpecialIds):
    """BioGPT's special ids, and decoding that writes token ids as words (the vocabulary files are not
    here; decoding costs microseconds either way). The word count is the number of generated tokens."""

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        specials = {self.bos_token_id, self.pad_token_id, self.eos_token_id} if skip_special_tokens else set()
        return [" ".join(str(t) for t in seq.tolist() if t not in specials) for seq in sequences]


def build(mode: Mode, device: str):
    """The captioner the evaluate stage would decode with, on random BioGPT weights."""
    from worker.config import load_config
    from worker.generation.model import build_captioner

    # Untied LM head: with BioGPT's tied one, a random model's top token is its input token, so after the
    # prompt's </s> it stops at once; an untied random head picks tokens at random and decodes the full length.
    spec = replace(MODELS["biogpt"], name="biogpt-untied", config={**BIOGPT_CONFIG, "tie_word_embeddings": False})
    checkpoint = ensure_checkpoint(spec, mode)
    config = load_config("iu-xray", {"model.biogpt": str(checkpoint)})
    captioner = build_captioner(config, IdsAsText(), FEATURE_DIM, device=device)
    captioner.eval()
    return captioner, config.generation


def timed_generation(captioner, features, gen, batch_size: int, device: str) -> tuple[list[str], float]:
    import torch

    from worker.generation.generate import generate_reports

    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
        texts = generate_reports(captioner, features, IdsAsText(), gen, batch_size)
    if device == "cuda":
        torch.cuda.synchronize()
    return texts, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n\n")[0])
    add_device_option(p)
    p.add_argument("--studies", type=int, default=None, help="Studies to generate for (default: 64 GPU, 8 CPU).")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="Override the preset's generation.max_new_tokens (default: the preset's).")
    args = p.parse_args(argv)

    import torch

    device = resolve_device(args.device)
    gpu = device == "cuda"
    quiet_libraries()
    # The evaluate stage builds the captioner with build_captioner's default fp32 compute dtype: fp32 weights.
    mode = Mode(device=device, warmup=0, steps=0, compile=False, full_depth=gpu, fp32=True)
    captioner, gen = build(mode, device)
    if args.max_new_tokens:
        gen = gen.model_copy(update={"max_new_tokens": args.max_new_tokens})
    studies = args.studies or (64 if gpu else 8)
    layers = "all" if gpu else MODELS["biogpt"].cpu_layers
    where = "GPU" if gpu else "CPU mode (no GPU)"
    print(f"{where}: BioGPT {layers} layer(s), {studies} studies, beam {gen.num_beams}, "
          f"max {gen.max_new_tokens} new tokens, batched = eval_batch_size {gen.eval_batch_size}")
    torch.manual_seed(0)
    features = torch.randn(studies, FEATURE_DIM)
    timed_generation(captioner, features[: min(2, studies)], gen, 2, device)  # warm-up: allocator, kernels

    rows: list[dict[str, Any]] = []
    outputs: dict[str, list[str]] = {}
    for label, batch_size in (("batched", gen.eval_batch_size), ("one at a time", 1)):
        texts, seconds = timed_generation(captioner, features, gen, batch_size, device)
        outputs[label] = texts
        tokens = sum(len(t.split()) for t in texts)
        rows.append({"what": label, "batch": batch_size, "studies": studies, "seconds": seconds,
                     "reports_per_s": studies / seconds, "tokens_per_report": tokens / studies})
        print(f"  {label}: {studies / seconds:.2f} reports/s", flush=True)
    speedup = rows[0]["reports_per_s"] / rows[1]["reports_per_s"]
    same = sum(a == b for a, b in zip(outputs["batched"], outputs["one at a time"], strict=True)) / studies
    checks = [check("batched beam search faster than one study at a time", speedup, 1.0, unit="x")]
    print_table(f"Report generation ({'GPU' if gpu else 'CPU, smaller model'})", rows,
                ["what", "batch", "studies", "seconds", "reports_per_s", "tokens_per_report"])
    print(f"  speed-up {speedup:.2f}x; identical reports batched vs one at a time: {same:.0%}")
    print_checks(checks)
    payload = {"mode": "gpu" if gpu else "cpu", "layers": layers, "num_beams": gen.num_beams,
               "max_new_tokens": gen.max_new_tokens, "no_repeat_ngram_size": gen.no_repeat_ngram_size,
               "compute_dtype": "float32", "rows": rows, "speedup": speedup, "identical_fraction": same,
               "targets": checks}
    write_results("generate", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
