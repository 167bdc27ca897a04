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
    assert cached.built and cached.kept.tolist() == [1, 3]
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


def _names(paths: list[Path]) -> tuple[Path, list[str]]:
    """The image root and the file names under it, as load_or_build_cache takes them."""
    return paths[0].parent, [p.name for p in paths]


def _pngs(folder: Path, count: int, broken: set[int]) -> list[Path]:
    """`count` PNGs of distinct random pixels; the indices in `broken` are not images at all."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    paths = []
    for i in range(count):
        paths.append(folder / f"{i:03d}.png")
        if i in broken:
            paths[-1].write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
        else:
            Image.fromarray(rng.integers(0, 256, size=(24, 20), dtype=np.uint8)).save(paths[-1])
    return paths


def test_a_cache_with_undecodable_files_is_cut_short_in_place(tmp_path: Path) -> None:
    """The kept images stay where they were decoded; the .npy's header says the shorter shape and the file
    ends after them: a plain np.load reads exactly the decoded images, and the sidecar names no file."""
    paths = _pngs(tmp_path / "png", 30, broken={0, 7, 8, 29})
    cached = load_or_build_cache(tmp_path / "cache", "x", *_names(paths), 16, workers=1)
    assert cached.kept.tolist() == [i for i in range(30) if i not in {0, 7, 8, 29}]
    whole = np.load(cached.path)  # not memory-mapped: the file itself is checked
    assert whole.shape == (26, 16, 16)
    for row, index in enumerate(cached.kept):
        np.testing.assert_array_equal(whole[row], decode_image(str(paths[index]), 16)[0])
    header = cached.path.stat().st_size - whole.nbytes
    assert header in (128, 192)  # the .npy header, and nothing after the images
    sidecar = (tmp_path / "cache" / "x.json").read_text()
    assert "000.png" not in sidecar and len(sidecar) < 300


def test_a_cache_with_the_earlier_sidecar_is_still_read(tmp_path: Path) -> None:
    import json

    paths = _pngs(tmp_path / "png", 5, broken={2})
    first = load_or_build_cache(tmp_path / "cache", "x", *_names(paths), 16, workers=1)
    sidecar = tmp_path / "cache" / "x.json"
    earlier = {"size": 16, "filenames": [p.name for p in paths], "kept": first.kept.tolist(), "kinds": first.kinds}
    sidecar.write_text(json.dumps(earlier))
    again = load_or_build_cache(tmp_path / "cache", "x", *_names(paths), 16, workers=1)
    assert not again.built and again.kept.tolist() == [0, 1, 3, 4]


class MemoryStore:
    """A shared store in memory (worker/data/shared.py), counting what went in and out."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.downloads: list[str] = []
        self.fail = False

    def download(self, key: str, target: Path) -> bool:
        if self.fail:
            raise OSError("the store is away")
        if key not in self.objects:
            return False
        self.downloads.append(key)
        target.write_bytes(self.objects[key])
        return True

    def upload(self, source: Path, key: str) -> None:
        if self.fail:
            raise OSError("the store is away")
        self.objects[key] = source.read_bytes()


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(cache_module, "decode_image", refuse)


def test_a_cache_decoded_on_one_host_is_copied_by_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.data import shared

    paths = _pngs(tmp_path / "png", 9, broken={4})
    store = MemoryStore()
    with shared.sharing(store):
        built = load_or_build_cache(tmp_path / "a", "x", *_names(paths), 16, workers=1, shared_prefix="p/cache")
        assert built.built and set(store.objects) == {"p/cache/x.npy", "p/cache/x.json"}
        with monkeypatch.context() as patch:
            _no_decoding(patch)
            copied = load_or_build_cache(tmp_path / "b", "x", *_names(paths), 16, workers=1, shared_prefix="p/cache")
            assert copied.downloaded and not copied.built and copied.kept.tolist() == built.kept.tolist()
            np.testing.assert_array_equal(np.asarray(copied.images), np.asarray(built.images))
            assert isinstance(copied.images, np.memmap)
            # Whole in its folder: the next load reads it there, nothing downloaded again.
            again = load_or_build_cache(tmp_path / "b", "x", *_names(paths), 16, workers=1, shared_prefix="p/cache")
            assert not again.built and not again.downloaded
            assert len(store.downloads) == 2
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["x.json", "x.npy"]

        # Other files under the same name (a stale object): decoded here, never read from the store.
        other = load_or_build_cache(tmp_path / "c", "x", *_names(paths[:5]), 16, workers=1, shared_prefix="p/cache")
        assert other.built and not other.downloaded and other.images.shape[0] == 4
        assert len(store.downloads) == 3  # its sidecar only: the array was not fetched
        assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["x.json", "x.npy"]

        # A store that is away: decoded here, the stage goes on.
        store.fail = True
        away = load_or_build_cache(tmp_path / "d", "x", *_names(paths), 16, workers=1, shared_prefix="p/cache")
        assert away.built and away.kept.tolist() == built.kept.tolist()
    # Without a store installed nothing is shared.
    assert load_or_build_cache(tmp_path / "e", "x", *_names(paths), 16, workers=1, shared_prefix="p/cache").built


_SLOW_BUILD = """
import sys, time
from pathlib import Path
from worker.data import cache
from worker.data.images import decode_image

def slow(name, size):
    time.sleep(0.2)
    return decode_image(name, size)

if __name__ == "__main__":
    cache.decode_image = slow  # the pool's children find it in this script, imported as their __mp_main__
    folder = Path(sys.argv[1])
    names = sorted(p.name for p in folder.glob("*.png"))
    cache.load_or_build_cache(folder / "cache", "slow", folder, names, 8, workers=2)
"""


def test_decoding_processes_exit_when_the_data_stage_is_killed(tmp_path: Path) -> None:
    """kill -9 of the data stage cannot stop its decoding pool: its processes must leave on their own (they waited
    for work forever, each holding its memory), and the next build sweeps the half-written cache."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from worker.data.prepared_index import remove_abandoned

    for i in range(cache_module.POOL_MIN_IMAGES + 44):
        Image.fromarray(np.full((8, 8), i % 256, np.uint8)).save(tmp_path / f"{i:04d}.png")
    script = tmp_path / "slow_build.py"
    script.write_text(_SLOW_BUILD)
    stage = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=Path(__file__).parents[1])
    try:
        parent = psutil.Process(stage.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            decoders = [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]
            if len(decoders) == 2 and list((tmp_path / "cache").glob("*.tmp-*")):
                break
            time.sleep(0.2)
        assert len(decoders) == 2, "the decoding pool did not start"
        os.kill(stage.pid, signal.SIGKILL)
        stage.wait()
        _, alive = psutil.wait_procs(decoders, timeout=10)
        assert not alive, f"decoding processes outlived the killed stage: {[p.pid for p in alive]}"
    finally:
        stage.kill()
    leftovers = list((tmp_path / "cache").glob("*.tmp-*"))
    assert leftovers
    remove_abandoned(tmp_path)
    assert not list((tmp_path / "cache").glob("*.tmp-*"))
