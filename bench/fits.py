"""Does the product fit the GPUs the seed promises? LoRA on 8 GB, QLoRA on 6 GB.

The process's GPU memory is capped with ``torch.cuda.set_per_process_memory_fraction`` at 8 GB and at
6 GB; the product's training step (the same path as bench/train_step.py: build_peft_siglip +
SiglipContrastiveModule under a Lightning Trainer) then runs a few steps of each preset's shapes with
random weights: iu-xray (SigLIP-base-224) and medsiglip (the MedSigLIP-448 shape), at the preset's batch
size. Then the largest batch that fits each cap is searched (doubling, then bisection).

The cap counts what PyTorch's allocator holds; the CUDA context (a few hundred MB on a real 8 GB card)
is outside it, so a pass here leaves that much less headroom on real hardware.

Needs a GPU: on the CPU it says so, writes a JSON with "skipped", and exits 0.
Run: python -m bench.fits [--models siglip-base-224,medsiglip-448] [--max-batch 1024]
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench._common import check, parser, print_checks, print_table, write_results

GB = 10**9
CAPS_GB = (8, 6)
PROMISE_GB = {"lora": 8, "qlora": 6}
FIT_MODELS = ("siglip-base-224", "medsiglip-448")


def _release() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def try_batch(spec, variant, checkpoint, batch_size: int, mode) -> dict[str, Any]:
    """A few product training steps at this batch under the current cap: fits, or out of memory."""
    import torch

    from bench.train_step import Measurement, fit_steps, product_module, siglip_batch

    _release()
    module = batch = None
    try:
        mode.batch_override = batch_size
        module, accelerator, precision = product_module(spec, variant, checkpoint, mode, Measurement())
        batch = siglip_batch(spec, batch_size, "cuda")
        durations = fit_steps(module, batch, accelerator, precision, mode)
        return {"fits": True, "peak_alloc_mb": torch.cuda.max_memory_allocated() / 2**20,
                "step_ms": 1000 * sorted(durations[mode.warmup:])[len(durations[mode.warmup:]) // 2]}
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        # bitsandbytes and some kernels report an allocation failure as a plain RuntimeError.
        if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
            return {"fits": False}
        raise
    finally:
        del module, batch
        _release()


def largest_batch(spec, variant, checkpoint, mode, start: int, limit: int) -> int:
    """Largest batch that fits: double from ``start`` until a failure (or ``limit``), then bisect."""
    ok, bad = 0, None
    size = start
    while size <= limit:
        if try_batch(spec, variant, checkpoint, size, mode)["fits"]:
            ok, size = size, size * 2
        else:
            bad = size
            break
    if ok == 0:  # even the start failed: search below it
        bad, size = start, 1
        while size < bad and try_batch(spec, variant, checkpoint, size, mode)["fits"]:
            ok, size = size, size * 2
        bad = min(bad, size)
    while bad is not None and bad - ok > 1:
        middle = (ok + bad) // 2
        if try_batch(spec, variant, checkpoint, middle, mode)["fits"]:
            ok = middle
        else:
            bad = middle
    return ok


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(FIT_MODELS), help=f"Comma-separated, from: {', '.join(FIT_MODELS)}.")
    p.add_argument("--max-batch", type=int, default=1024, help="Stop the largest-batch search here.")
    p.add_argument("--no-search", action="store_true", help="Only check the presets' batch sizes.")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench/fits.py needs a CUDA GPU (it caps GPU memory at 8 and 6 GB); none is visible: skipped.")
        write_results("fits", {"mode": "cpu", "skipped": True, "reason": "no CUDA device", "rows": [], "targets": []},
                      args.out)
        return {"skipped": True}

    from bench.train_step import MODELS, Mode, Variant, ensure_checkpoint, quiet_libraries

    quiet_libraries()
    total = torch.cuda.get_device_properties(0).total_memory
    mode = Mode(device="cuda", warmup=1, steps=2, compile=False, full_depth=True)
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in FIT_MODELS:
            raise SystemExit(f"--models: unknown {name}; choose from {', '.join(FIT_MODELS)}")
        spec = MODELS[name]
        checkpoint = ensure_checkpoint(spec, mode)
        for method in ("lora", "qlora"):
            variant = Variant.parse(f"product-{method}")
            preset_batch = load_preset_batch(spec)
            for cap in CAPS_GB:
                torch.cuda.set_per_process_memory_fraction(min(1.0, cap * GB / total), 0)
                result = try_batch(spec, variant, checkpoint, preset_batch, mode)
                row = {"model": name, "method": method, "cap_gb": cap, "preset_batch": preset_batch, **result}
                if not args.no_search:
                    row["largest_batch"] = largest_batch(spec, variant, checkpoint, mode, preset_batch, args.max_batch)
                rows.append(row)
                print(f"  {name} {method} cap {cap} GB: batch {preset_batch} {'fits' if result['fits'] else 'OOM'}"
                      + (f", largest batch {row['largest_batch']}" if "largest_batch" in row else ""), flush=True)
                if cap == PROMISE_GB[method]:
                    checks.append(check(f"{name}: default {method} config (batch {preset_batch}) fits {cap} GB",
                                        1.0 if result["fits"] else 0.0, 1.0))
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    print_table("Fits under a memory cap (GPU)", rows,
                ["model", "method", "cap_gb", "preset_batch", "fits", "peak_alloc_mb", "step_ms", "largest_batch"])
    print_checks(checks)
    payload = {"mode": "gpu", "skipped": False, "wall_s": round(time.perf_counter() - started, 1), "rows": rows,
               "targets": checks}
    write_results("fits", payload, args.out)
    return payload


def load_preset_batch(spec) -> int:
    """The preset's train.batch_size: what a user gets without choosing."""
    from worker.config import load_config

    return load_config(spec.preset).train.batch_size


if __name__ == "__main__":
    main()
