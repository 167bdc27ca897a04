"""Images per second through the training DataLoader: from the raw PNGs, and from the image cache.

The loader is the product's own: ``SiglipDataModule.train_dataloader()`` (worker/siglip/datamodule.py)
with its augmentation and normalisation, batch size and worker count; only where its images come from
differs. "cache" memory-maps the data stage's cache (worker/data/cache.py, ``load_or_build_cache``);
"raw" decodes every PNG on each access with the data stage's ``decode_image``, as a loader without a
cache would. The synthetic dataset's PNGs are small (96-160 px), far cheaper to decode than IU-Xray's
films (about 2000 x 2500 px), so the raw path is also measured on "full-size" copies: the same
synthetic images upscaled to 2048 x 2496 with mild film noise, re-encoded as PNG. The 50x target is
checked against the full-size raw path (what a real run would pay); the native one is reported beside.

Also timed: building the cache (decode + resize of every image by the data stage's process pool).

Run: python -m bench.data [--sizes 224,448] [--studies 300]
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import REPO, RESULTS_DIR, check, parser, print_checks, print_table, write_results

WORK_DIR = REPO / "var" / "bench" / "data"
FULL_SIZE = (2048, 2496)  # width, height of a typical IU-Xray film
BATCH_FOR_SIZE = {224: 64, 448: 16}  # the training batch of the train_step benchmark at that resolution
PRESET_FOR_SIZE = {224: "iu-xray", 448: "medsiglip"}
SIGLIP_MEAN_STD = (0.5, 0.5, 0.5)  # SigLIP's image processor normalises with mean = std = 0.5
TEXT_TOKENS = 64
CACHED_OVER_RAW = 50.0


class RandomTokenizer:
    """Stands in for SigLIP's tokenizer: the loader's text side is a fixed tensor; only images are timed."""

    def __call__(self, texts: list[str], **_: Any) -> dict[str, Any]:
        import torch

        return {"input_ids": torch.randint(2, 32000, (len(texts), TEXT_TOKENS))}


class RawImages:
    """An array-like of decoded images: decodes the PNG on every access, like a loader without a cache."""

    def __init__(self, paths: list[Path], size: int):
        self.paths = [str(p) for p in paths]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        from worker.data.images import decode_image

        pixels, _ = decode_image(self.paths[index], self.size)
        if pixels is None:
            raise ValueError(f"{self.paths[index]} does not decode")
        return pixels


@dataclass
class Split:
    texts: list[str]
    images: Any


@dataclass
class OneSplit:
    """What SiglipDataModule reads: .split(name) for train and val (the same images serve both here)."""

    split_data: Split

    def split(self, name: str) -> Split:
        return self.split_data


def synthetic_rows(studies: int) -> tuple[list[Path], list[str]]:
    """The smoke preset's synthetic dataset (generated once under var/data): frontal image paths, texts."""
    from worker.config import load_config
    from worker.data.readers import ReadOptions, reader_for
    from worker.data.sources import locate_dataset

    config = load_config("smoke", {"data.synthetic_studies": studies})
    location = locate_dataset(config)
    parsed = reader_for(config.data.source).parse(location.root, ReadOptions("impression"))
    rows = [r for r in parsed.rows if r.projection == "Frontal" and (parsed.image_root / r.filename).is_file()]
    return [parsed.image_root / r.filename for r in rows], [r.text for r in rows]


def full_size_copies(paths: list[Path], count: int) -> list[Path]:
    """``count`` of the synthetic PNGs upscaled to a real film's size, with noise so PNG cannot shortcut it."""
    from PIL import Image

    folder = WORK_DIR / f"fullsize-{FULL_SIZE[0]}x{FULL_SIZE[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    copies = []
    for source in paths:
        if len(copies) == count:
            break
        target = folder / source.name
        if not target.is_file():
            try:
                with Image.open(source) as img:
                    big = np.asarray(img.convert("L").resize(FULL_SIZE, Image.Resampling.BICUBIC), dtype=np.float32)
            except OSError:  # the synthetic set plants undecodable files, as the real one has
                continue
            noisy = np.clip(big + rng.normal(0, 2.0, big.shape), 0, 255).astype(np.uint8)
            tmp = target.with_suffix(".tmp.png")
            Image.fromarray(noisy).save(tmp)
            tmp.replace(target)
        copies.append(target)
    return copies


def loader_for(images: Any, texts: list[str], size: int, workers: int):
    """The product's training DataLoader over these images (augmentation on, as in training)."""
    from worker.config import load_config
    from worker.siglip.datamodule import SiglipDataModule
    from worker.siglip.preprocess import ImageNormalizer

    config = load_config(PRESET_FOR_SIZE[size], {"train.batch_size": BATCH_FOR_SIZE[size],
                                                 "data.num_workers": workers, "data.image_size": size})
    normalizer = ImageNormalizer(size, SIGLIP_MEAN_STD, SIGLIP_MEAN_STD)
    module = SiglipDataModule(config, OneSplit(Split(texts, images)), RandomTokenizer(), normalizer)
    module.setup("fit")
    return module.train_dataloader()


def images_per_second(loader, max_batches: int) -> tuple[float, int]:
    """Images/s over ``max_batches`` batches after the first (worker start-up is not throughput), going
    round the epochs as often as needed."""
    count = done = 0
    started = 0.0
    while done <= max_batches:
        for batch in loader:
            if done == 0:
                started = time.perf_counter()
            else:
                count += len(batch["index"])
            done += 1
            if done > max_batches:
                break
    return count / (time.perf_counter() - started), count


def build_cache(paths: list[Path], size: int, workers: int) -> tuple[Any, float]:
    """The data stage's cache build from scratch (its own folder, deleted first), timed."""
    from worker.data.cache import cache_name, load_or_build_cache

    folder = WORK_DIR / "cache"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    names = [str(p) for p in paths]  # absolute: joined to the root "/" they stay themselves
    cache = load_or_build_cache(folder, cache_name("bench", "Frontal", size, names), Path("/"), names, size, workers)
    return cache, time.perf_counter() - started


def gpu_step_rates() -> dict[int, float]:
    """The fastest GPU training rate measured at each image size, from bench/results/train_step.json."""
    path = RESULTS_DIR / "train_step.json"
    if not path.is_file():
        return {}
    results = json.loads(path.read_text())
    if results.get("mode") != "gpu":
        return {}
    size_of = {"siglip-base-224": 224, "medsiglip-448": 448}
    rates: dict[int, float] = {}
    for row in results["rows"]:
        size = size_of.get(row["model"])
        if size and row.get("samples_per_s"):
            rates[size] = max(rates.get(size, 0.0), row["samples_per_s"])
    return rates


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="224,448", help="Cached image sides to measure (224, 448).")
    p.add_argument("--studies", type=int, default=300, help="Synthetic studies (the smoke preset's dataset).")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers (default: the preset's data.num_workers, capped at the CPU count).")
    p.add_argument("--batches", type=int, default=20, help="Timed batches per cached measurement.")
    p.add_argument("--raw-batches", type=int, default=3, help="Timed batches per raw measurement (slow).")
    p.add_argument("--full-size-images", type=int, default=48, help="Synthetic PNGs re-encoded at full film size.")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in BATCH_FOR_SIZE]
    if unknown:
        raise SystemExit(f"--sizes: {unknown} not supported; choose from {sorted(BATCH_FOR_SIZE)}")

    from worker.config import load_config

    paths, texts = synthetic_rows(args.studies)
    started = time.perf_counter()
    full = full_size_copies(paths, args.full_size_images)
    print(f"{len(paths)} frontal synthetic images; {len(full)} full-size copies ready in "
          f"{time.perf_counter() - started:.1f} s")
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    gpu_rates = gpu_step_rates()
    cores = os.cpu_count() or 1
    for size in sizes:
        workers = args.workers if args.workers is not None else min(
            load_config(PRESET_FOR_SIZE[size]).data.num_workers, cores)
        batch = BATCH_FOR_SIZE[size]
        cache, build_s = build_cache(paths, size, workers=0)
        rows.append({"what": f"cache build {size}px", "size": size, "images": len(paths), "seconds": build_s,
                     "images_per_s": len(paths) / build_s, "workers": cores})
        # The cache keeps the images that decode; the raw loaders read the same files.
        kept_paths, kept_texts = [paths[i] for i in cache.kept], [texts[i] for i in cache.kept]
        cached_rate, cached_n = images_per_second(loader_for(cache.images, kept_texts, size, workers), args.batches)
        rows.append({"what": f"loader cache {size}px", "size": size, "batch": batch, "workers": workers,
                     "images": cached_n, "images_per_s": cached_rate})
        raw_rates = {}
        sources = (("native", kept_paths, kept_texts), ("full-size", full, kept_texts[: len(full)]))
        for label, source, source_texts in sources:
            rate, n = images_per_second(loader_for(RawImages(source, size), source_texts, size, workers),
                                        args.raw_batches)
            raw_rates[label] = rate
            rows.append({"what": f"loader raw {label} {size}px", "size": size, "batch": batch, "workers": workers,
                         "images": n, "images_per_s": rate})
        checks.append(check(f"{size}px: cached loader >= {CACHED_OVER_RAW:g}x raw full-size loader", cached_rate,
                            CACHED_OVER_RAW * raw_rates["full-size"], unit="images/s"))
        checks.append(check(f"{size}px: cached loader >= {CACHED_OVER_RAW:g}x raw native-size loader (synthetic PNGs)",
                            cached_rate, CACHED_OVER_RAW * raw_rates["native"], unit="images/s"))
        checks.append(check(f"{size}px: cached loader faster than the fastest GPU training step rate", cached_rate,
                            gpu_rates.get(size), unit="images/s",
                            why_skipped=None if size in gpu_rates else
                            "no GPU train_step results in bench/results/train_step.json"))
    print_table("DataLoader throughput", rows, ["what", "batch", "workers", "images", "seconds", "images_per_s"])
    print_checks(checks)
    payload = {"mode": "cpu", "studies": args.studies, "full_size": list(FULL_SIZE), "rows": rows, "targets": checks}
    write_results("data", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
