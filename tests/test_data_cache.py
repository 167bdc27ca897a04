"""The image cache equals a fresh decode, is reused, and converts 16-bit and RGB files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.config import RunConfig
from worker.data import PreparedData, load_prepared
from worker.data import cache as cache_module
from worker.data.cache import load_or_build_cache
from worker.data.images import decode_image


def test_cache_equals_a_fresh_decode(smoke_prepared: PreparedData, smoke_config: RunConfig) -> None:
    size = smoke_config.data.image_size
    folder = smoke_prepared.root / "images" / "images_normalized"
    for split in smoke_prepared.splits.values():
        assert isinstance(split.images, np.memmap)
        assert split.images.dtype == np.uint8 and split.images.shape == (len(split), size, size)
        for i, name in enumerate(split.filenames):
            fresh, _ = decode_image(str(folder / name), size)
            np.testing.assert_array_equal(split.images[i], fresh)


def test_second_load_reads_the_cache(smoke_prepared: PreparedData, smoke_config: RunConfig) -> None:
    caches = [Path(smoke_prepared.artifacts[f"cache_{name}"]) for name in ("train", "val", "test")]
    stamps = [p.stat().st_mtime_ns for p in caches]
    again = load_prepared(smoke_config)
    assert [p.stat().st_mtime_ns for p in caches] == stamps
    assert again.counts == smoke_prepared.counts
    assert again.split("val").filenames == smoke_prepared.split("val").filenames


def test_16bit_and_rgb_decode_to_the_same_gray_image(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 30), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "gray.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(tmp_path / "rgb.png")
    gray, kind = decode_image(str(tmp_path / "gray.png"), 16)
    assert kind == "gray8" and gray.shape == (16, 16)
    for name, expected_kind in (("deep.png", "16bit"), ("rgb.png", "rgb")):
        image, kind = decode_image(str(tmp_path / name), 16)
        assert kind == expected_kind
        np.testing.assert_array_equal(image, gray)


def test_undecodable_files_are_left_out_and_counted(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 20), 200, np.uint8)).save(good)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    names = [garbage.name, good.name, truncated.name, good.name]
    cached = load_or_build_cache(tmp_path / "cache", "x", tmp_path, names, 8, workers=1)
    assert cached.built and cached.kept == [1, 3]
    assert cached.kinds == {"undecodable": 2, "gray8": 2}
    assert cached.images.shape == (2, 8, 8) and (np.asarray(cached.images) == 200).all()
    assert not load_or_build_cache(tmp_path / "cache", "x", tmp_path, names, 8, workers=1).built
    # other files: rebuilt
    assert load_or_build_cache(tmp_path / "cache", "x", tmp_path, [good.name], 8, workers=1).built
    assert list((tmp_path / "cache").glob("*tmp*")) == []


@pytest.mark.slow
def test_process_pool_gives_the_same_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, size=(50, 60), dtype=np.uint8)).save(paths[-1])
    serial = load_or_build_cache(tmp_path / "serial", "x", tmp_path, [p.name for p in paths], 16, workers=1)
    monkeypatch.setattr(cache_module, "POOL_MIN_IMAGES", 1)
    pooled = load_or_build_cache(tmp_path / "pooled", "x", tmp_path, [p.name for p in paths], 16, workers=2)
    np.testing.assert_array_equal(np.asarray(pooled.images), np.asarray(serial.images))
