"""Data at MIMIC-CXR scale: the data stage, the loader and a smoke training on 10k to 377,110 images.

On synthetic MIMIC-CXR-JPG folders (``worker.data.synthetic_mimic``: small stand-in JPGs, report files,
planted defects) of 10,000, 100,000 and 377,110 images, each measured in a fresh child process so that its
peak RSS is its own:

- ``prepare``: the data stage (``load_prepared``: the mimic-cxr reader over the CSVs and report files into
  column files, view selection, the official split, the image caches decoded by the stage's process pool, the
  prepared index), from nothing: wall time, the prepared folder's size on disk, the peak RSS of the stage's
  process and of the process tree;
- ``loader``: the product's training DataLoader (``SiglipDataModule`` over the prepared caches, the smoke
  preset's batch, ``--loader-workers`` workers): images/s over ``--batches`` batches after the first;
- ``train``: one epoch of the smoke preset's SigLIP training (tiny random-init model, CPU) on the prepared
  data (it memory-maps the prepared index, as every stage after the data stage does), capped at
  ``--train-batches`` batches (0: the whole epoch), validation on the whole val split: wall time and peak RSS.

The smoke preset's settings (64 px cache, Frontal views, the findings section, batch 16) with
``data.source=mimic-cxr``; ``--form annotation`` puts the reports in R2Gen's annotation.json instead of the
report files (folders ``mimic-annotation-nN``).

Targets: the data stage's time growing no worse than linearly (its time per image at the largest size at most
that at the smallest) and its peak RSS at the largest size at most 1.5x that at the smallest; the same RSS
ratio is reported for training. The RSS target is checked on the anonymous RSS (what the process itself
holds); VmHWM, also reported, adds the file pages the process has mapped (the memory-mapped image cache and
index, and the pages the kernel maps around each one read), which the kernel can drop and the loader workers
share.

Run: ``.venv/bin/python -m bench.data_scale [--sizes 10000,100000,377110]``. The folders are generated once
under var/bench/data_scale/ (the 377,110-image one took 62 s on 2 cores and 3.5 GB).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import REPO, check, parser, print_checks, print_table, write_results

WORK_DIR = REPO / "var" / "bench" / "data_scale"
RSS_RATIO = 1.5
MB = 2**20


def dataset(images: int, workers: int, form: str = "reports") -> Path:
    """The synthetic folder of ``images`` images with its reports in ``form`` (generated once, reused while its
    planted.json says so)."""
    from worker.data.synthetic_mimic import PLANTED_JSON, generate_mimic

    root = WORK_DIR / (f"mimic-n{images}" if form == "reports" else f"mimic-{form}-n{images}")
    planted = root / PLANTED_JSON
    if not (planted.is_file() and json.loads(planted.read_text()).get("images") == images):
        started = time.perf_counter()
        generate_mimic(root, images, form=form, size=32, workers=workers, record_studies=False, quiet=False)
        print(f"generated {root} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return root


def _config(root: Path, var: Path, **extra: Any):
    from worker.config import load_config

    overrides = {"paths.var_dir": str(var), "data.source": "mimic-cxr", "data.data_dir": str(root),
                 "data.target": "findings", **{k: str(v) for k, v in extra.items()}}  # fmt: skip
    return load_config("smoke", overrides)


def _status(pid: str) -> dict[str, int]:
    """kB fields of /proc/PID/status ({} for a process that has gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if v.strip().endswith("kB")}


def _descendants(pid: str) -> list[str]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = task.read_text().split()
            except OSError:
                continue
            found += kids
            todo += kids
    return found


class Sampler:
    """Samples every 0.1 s this process's anonymous and file-backed RSS and the RSS of it and its descendants
    (decoding pool, DataLoader workers). VmHWM alone counts the image cache's memory-mapped pages while they
    are written or read (page cache the kernel can drop) and, for a spawned child, inherits its parent's peak
    across exec: neither is memory the step holds."""

    def __init__(self) -> None:
        import threading

        self.peak = {"anon_mb": 0.0, "file_mb": 0.0, "tree_mb": 0.0, "tree_anon_mb": 0.0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        own = _status("self")
        tree = [own] + [_status(pid) for pid in _descendants(str(os.getpid()))]
        values = {"anon_mb": own.get("RssAnon", 0), "file_mb": own.get("RssFile", 0) + own.get("RssShmem", 0),
                  "tree_mb": sum(s.get("VmRSS", 0) for s in tree),
                  "tree_anon_mb": sum(s.get("RssAnon", 0) for s in tree)}  # fmt: skip
        for key, kb in values.items():
            self.peak[key] = max(self.peak[key], kb / 1024)

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self._sample()

    def result(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        self._sample()
        hwm = _status("self").get("VmHWM", 0) / 1024
        return {"peak_rss_mb": round(hwm, 1), **{f"peak_{k}": round(v, 1) for k, v in self.peak.items()}}


def _disk_bytes(folder: Path) -> int:
    """Bytes the folder takes on disk (allocated blocks)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def child_fixtures(root: Path, var: Path) -> dict[str, Any]:
    """Build the smoke preset's tiny models once, outside the timed children."""
    from worker.fixtures.tiny_models import ensure_tiny_models

    ensure_tiny_models(_config(root, var))
    return {}


def child_prepare(root: Path, var: Path, cache_workers: int) -> dict[str, Any]:
    from worker.data.prepared import load_prepared

    config = _config(root, var, **{"model.build_tiny_fixtures": "false", "data.cache_workers": cache_workers})
    sampler = Sampler()
    started = time.perf_counter()
    prepared = load_prepared(config)
    wall = time.perf_counter() - started
    folder = Path(prepared.artifacts["prepared_dir"])
    counts = prepared.counts
    return {"wall_s": round(wall, 2), "prepared_mb": round(_disk_bytes(folder) / MB, 1), "prepared_dir": str(folder),
            "images_kept": counts["images_kept"], "studies_kept": counts["studies_kept"],
            "train_images": counts["train_images"], **sampler.result()}  # fmt: skip


def child_loader(root: Path, var: Path, batches: int, workers: int) -> dict[str, Any]:
    from bench.data import RandomTokenizer, images_per_second
    from worker.data.prepared import load_prepared
    from worker.siglip.datamodule import SiglipDataModule
    from worker.siglip.preprocess import ImageNormalizer

    config = _config(root, var, **{"model.build_tiny_fixtures": "false", "data.num_workers": workers})
    sampler = Sampler()
    prepared = load_prepared(config)  # the caches exist: memory-mapped
    normalizer = ImageNormalizer(config.data.image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    module = SiglipDataModule(config, prepared, RandomTokenizer(), normalizer)
    module.setup("fit")
    rate, count = images_per_second(module.train_dataloader(), batches)
    return {"images_per_s": round(rate, 1), "images_timed": count, "batch": config.train.batch_size,
            "workers": workers, **sampler.result()}  # fmt: skip


def child_train(root: Path, var: Path, train_batches: int) -> dict[str, Any]:
    from worker.recorder import MemoryRecorder
    from worker.siglip.stage import train_siglip

    extra: dict[str, Any] = {"train.epochs": 1}
    if train_batches:
        extra["train.limit_train_batches"] = train_batches
    config = _config(root, var, **extra)
    sampler = Sampler()
    started = time.perf_counter()
    result = train_siglip(config, MemoryRecorder())
    return {"wall_s": round(time.perf_counter() - started, 2), "status": result.status,
            "train_batches": train_batches or "epoch", **sampler.result()}  # fmt: skip


def run_child(kind: str, *args: str, timeout: float = 3600, module: str = "bench.data_scale") -> dict[str, Any]:
    """Run ``module --child kind`` in a fresh process (its peak memory its own); its last stdout line, parsed."""
    command = [sys.executable, "-m", module, "--child", kind, *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,377110", help="Images per synthetic folder.")
    p.add_argument("--batches", type=int, default=200, help="Timed loader batches.")
    p.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers of the loader measurement.")
    p.add_argument("--train-batches", type=int, default=100,
                   help="Cap of the one-epoch training (train.limit_train_batches); 0 runs the whole epoch.")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Processes generating and caching.")
    p.add_argument("--skip-train", action="store_true", help="Measure the data stage and the loader only.")
    p.add_argument("--form", choices=("reports", "annotation"), default="reports",
                   help="The reports as MIMIC-CXR's text files or as R2Gen's annotation.json.")
    p.add_argument("--child", choices=("fixtures", "prepare", "loader", "train"), help=argparse_hidden())
    p.add_argument("--root", type=Path, help=argparse_hidden())
    p.add_argument("--var", type=Path, help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        if args.child == "fixtures":
            out = child_fixtures(args.root, args.var)
        elif args.child == "prepare":
            out = child_prepare(args.root, args.var, args.workers)
        elif args.child == "loader":
            out = child_loader(args.root, args.var, args.batches, args.loader_workers)
        else:
            out = child_train(args.root, args.var, args.train_batches)
        print(json.dumps(out))
        return out

    rows = []
    var = WORK_DIR / "var"  # one var root: the tiny models are built once, each folder's prepared data apart
    for images in (int(size) for size in args.sizes.split(",")):
        root = dataset(images, args.workers, args.form)
        for old in (var / "data" / "prepared").glob(f"mimic-cxr-{root.name}-*"):
            shutil.rmtree(old)  # the data stage from nothing
        common = ["--root", str(root), "--var", str(var), "--workers", str(args.workers)]
        if not args.skip_train and not rows:
            run_child("fixtures", *common)
        prepare = run_child("prepare", *common)
        print(f"{images} images: prepare {prepare}", file=sys.stderr, flush=True)
        loader = run_child("loader", *common, "--batches", str(args.batches), "--loader-workers",
                           str(args.loader_workers))  # fmt: skip
        print(f"{images} images: loader {loader}", file=sys.stderr, flush=True)
        row = {"images": images, "kept": prepare["images_kept"], "train_images": prepare["train_images"],
               "prepare_s": prepare["wall_s"], "prepare_us_per_image": round(prepare["wall_s"] / images * 1e6, 1),
               "prepared_mb": prepare["prepared_mb"], "prepare_hwm_mb": prepare["peak_rss_mb"],
               "prepare_anon_mb": prepare["peak_anon_mb"], "prepare_tree_anon_mb": prepare["peak_tree_anon_mb"],
               "loader_images_per_s": loader["images_per_s"], "loader_anon_mb": loader["peak_anon_mb"],
               "loader_tree_anon_mb": loader["peak_tree_anon_mb"]}  # fmt: skip
        if not args.skip_train:
            train = run_child("train", *common, "--train-batches", str(args.train_batches))
            print(f"{images} images: train {train}", file=sys.stderr, flush=True)
            row |= {"train_s": train["wall_s"], "train_hwm_mb": train["peak_rss_mb"],
                    "train_anon_mb": train["peak_anon_mb"], "train_tree_anon_mb": train["peak_tree_anon_mb"],
                    "train_batches": train["train_batches"]}
        rows.append(row)

    small, large = rows[0], rows[-1]
    checks = [
        check(f"data-stage time per image at {large['images']:,} <= at {small['images']:,}",
              large["prepare_us_per_image"], small["prepare_us_per_image"], higher_is_better=False, unit="us/image"),
        check(f"data-stage peak RSS (anonymous) at {large['images']:,} <= {RSS_RATIO}x at {small['images']:,}",
              large["prepare_anon_mb"], RSS_RATIO * small["prepare_anon_mb"], higher_is_better=False, unit="MB"),
        check(f"data-stage peak RSS (VmHWM, file pages included) at {large['images']:,} <= {RSS_RATIO}x at "
              f"{small['images']:,}", large["prepare_hwm_mb"], RSS_RATIO * small["prepare_hwm_mb"],
              higher_is_better=False, unit="MB"),
    ]  # fmt: skip
    if "train_anon_mb" in large:
        checks.append(check(f"training peak RSS (anonymous) at {large['images']:,} <= {RSS_RATIO}x at "
                            f"{small['images']:,}", large["train_anon_mb"], RSS_RATIO * small["train_anon_mb"],
                            higher_is_better=False, unit="MB"))  # fmt: skip
    from bench.summary import COLUMNS

    columns = COLUMNS["data_scale"]
    print_table("Data at MIMIC-CXR scale (synthetic MIMIC-CXR-JPG, smoke preset, 64 px cache)", rows, columns)
    print_checks(checks)
    settings = {k: v for k, v in vars(args).items() if k not in ("child", "root", "var", "out")}
    payload = {"mode": "cpu", "settings": settings, "rows": rows, "checks": checks}
    write_results("data_scale", payload, args.out)
    return payload


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
