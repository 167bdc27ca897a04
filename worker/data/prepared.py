"""``load_prepared``: everything the training stages need from the data, built once and reused.

Steps, each reusing what an earlier run left: tiny model fixtures (smoke only) -> dataset folder
(generated, downloaded or local) -> parsed and cleaned rows with quirk counts (the layout's reader,
worker.data.readers) -> the views the run keeps (worker.data.selection) -> split manifest by study
(the dataset's official split, ``data.split_file``, or drawn by patient where there are patient ids)
-> one image cache per split. A second call with the same config only parses the dataset's files and
memory-maps the caches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.base_models import base_dir
from worker.config import RunConfig
from worker.data.cache import cache_name, load_or_build_cache
from worker.data.readers import ParsedDataset, ReadOptions, reader_for
from worker.data.rows import RowView, pick_rows
from worker.data.selection import select_rows
from worker.data.sources import locate_dataset
from worker.data.split_file import fixed_split, manifest_name
from worker.data.splits import (
    SPLITS,
    check_patient_disjoint,
    load_or_create_manifest,
    manifest_path,
    test_from_train,
    write_manifest,
)
from worker.data.synthetic import PLANTED_JSON, Planted


@dataclass(frozen=True, eq=False)
class SplitData:
    """One split's images and texts, row-aligned: row i of every list belongs to images[i]."""

    name: str
    uids: list[str]
    filenames: list[str]
    projections: list[str]
    texts: list[str]
    """Cleaned target text (impression, or findings per config.data.target)."""
    images: np.ndarray | RowView
    """uint8 [N, S, S] grayscale, memory-mapped from the cache (or a view of some of its rows)."""

    def __len__(self) -> int:
        return len(self.filenames)

    def without(self, uids: Collection[str]) -> SplitData:
        """This split without the rows of the given studies; its images are a view of the cache's rows, read
        on access (nothing is copied out of the cache)."""
        keep = [i for i, uid in enumerate(self.uids) if uid not in uids]
        if len(keep) == len(self.uids):
            return self
        return SplitData(
            name=self.name,
            uids=[self.uids[i] for i in keep],
            filenames=[self.filenames[i] for i in keep],
            projections=[self.projections[i] for i in keep],
            texts=[self.texts[i] for i in keep],
            images=pick_rows(self.images, keep),
        )


@dataclass
class PreparedData:
    root: Path
    """The dataset folder in the Kaggle layout."""
    counts: dict[str, int]
    """Rows, studies and images kept and skipped, by reason (see worker.data.readers and worker.data.selection)."""
    splits: dict[str, SplitData]
    artifacts: dict[str, str] = field(default_factory=dict)
    """Paths of what was read or built: manifest, caches, planted ground truth, tiny models."""
    planted: Planted | None = None
    """For synthetic data, what the generator planted (the expected counts)."""
    missing_studies: dict[str, list[str]] = field(default_factory=dict)
    """With data.split_file: per split, the ids it names that the local copy lacks."""

    def split(self, name: str) -> SplitData:
        if name not in self.splits:
            raise KeyError(f"unknown split '{name}'; allowed: {', '.join(self.splits)}")
        return self.splits[name]


def _split_manifest(
    config: RunConfig, prepared_dir: Path, parsed: ParsedDataset
) -> tuple[dict[str, list[str]], Path, dict[str, list[str]], dict[str, int]]:
    """uids per split, the manifest's path, and with a split file the ids it names that are missing here
    and the counts of named, missing and left-out studies."""
    data = config.data
    if data.split_file:
        return _file_split(config, prepared_dir, parsed)
    if data.official_split and parsed.official_split:
        return _official_split(config, prepared_dir, parsed)
    manifest, path = load_or_create_manifest(
        prepared_dir, parsed.report_uids, data.split_seed, tuple(data.split_fractions), parsed.patients or None
    )
    return manifest, path, {}, {}


def _file_split(
    config: RunConfig, prepared_dir: Path, parsed: ParsedDataset
) -> tuple[dict[str, list[str]], Path, dict[str, list[str]], dict[str, int]]:
    data = config.data
    fixed = fixed_split(config.local_path(data.split_file), parsed.report_uids, parsed.filenames)
    check_patient_disjoint(fixed.uids, parsed.patients, f"split file {data.split_file}")
    content = {"split_file": str(data.split_file), "uids": fixed.uids, "missing": fixed.missing}
    path = write_manifest(prepared_dir, manifest_name(data.split_file), content)
    counts = {
        "split_file_studies": fixed.named,
        "split_file_missing": sum(len(ids) for ids in fixed.missing.values()),
        "studies_not_in_split_file": fixed.unlisted,
    }
    counts |= {f"split_file_missing_{name}": len(ids) for name, ids in fixed.missing.items()}
    return fixed.uids, path, fixed.missing, counts


def _official_split(
    config: RunConfig, prepared_dir: Path, parsed: ParsedDataset
) -> tuple[dict[str, list[str]], Path, dict[str, list[str]], dict[str, int]]:
    """The dataset's own split, checked to keep each patient on one side; reports it leaves out are counted.
    A split without test studies (CheXpert Plus's has train and valid only) gets its test split drawn from its
    train studies by patient, with data.split_seed and the test share of data.split_fractions."""
    uids: dict[str, list[str]] = {name: [] for name in SPLITS}
    unlisted = 0
    for uid in parsed.report_uids:
        name = parsed.official_split.get(uid)
        if name in uids:
            uids[name].append(uid)
        else:
            unlisted += 1
    check_patient_disjoint(uids, parsed.patients, "the dataset's official split")
    counts = {"studies_not_in_official_split": unlisted}
    content: dict = {"official": True, "uids": uids}
    name = "splits-official.json"
    if uids["train"] and not uids["test"]:
        data = config.data
        uids["train"], uids["test"] = test_from_train(
            uids["train"], parsed.patients, data.split_seed, tuple(data.split_fractions)
        )
        counts["official_split_test_drawn_from_train"] = len(uids["test"])
        content["test_drawn_from_train"] = {"seed": data.split_seed, "fractions": list(data.split_fractions)}
        name = manifest_path(prepared_dir, data.split_seed, tuple(data.split_fractions)).name.replace(
            "splits-", "splits-official-test-"
        )
    path = write_manifest(prepared_dir, name, content)
    return uids, path, {}, counts


def shared_cache_prefix(config: RunConfig, prepared_dir: Path) -> str | None:
    """Where this dataset's image caches go in a shared store (worker/data/shared.py): the prepared folder's
    place under the var folder, the same on every host with the same data settings (a local copy's folder
    name holds a digest of its path: hosts share its caches when they mount it at the same path). The cache's
    own name adds the split, view, size and a digest of its file list. None outside the var folder."""
    try:
        relative = prepared_dir.resolve().relative_to(config.var_path().resolve())
    except ValueError:
        return None
    return f"{relative.as_posix()}/cache"


def load_prepared(config: RunConfig) -> PreparedData:
    """Build whatever is missing (dataset, tiny models, manifest, caches) and return the splits."""
    artifacts: dict[str, str] = {}
    if config.model.build_tiny_fixtures:
        from worker.fixtures.tiny_models import ensure_tiny_models  # pulls in torch: only when asked

        ensure_tiny_models(config)
        artifacts["siglip_model"] = base_dir(config, "siglip")
        artifacts["biogpt_model"] = base_dir(config, "biogpt")
    data = config.data
    location = locate_dataset(config)
    parsed = reader_for(data.source).parse(location.root, ReadOptions(data.target, config.eval.protocol))
    selected, selection_counts = select_rows(parsed.rows, data)
    manifest, manifest_file, missing, split_counts = _split_manifest(config, location.prepared_dir, parsed)
    counts = parsed.counts | selection_counts | split_counts
    split_of = {uid: name for name, uids in manifest.items() for uid in uids}
    artifacts.update(dataset_root=str(location.root), prepared_dir=str(location.prepared_dir))
    artifacts["split_manifest"] = str(manifest_file)
    if location.planted is not None:
        artifacts["planted"] = str(location.root / PLANTED_JSON)

    splits: dict[str, SplitData] = {}
    kinds: Counter[str] = Counter()
    shared_prefix = shared_cache_prefix(config, location.prepared_dir)
    for name in SPLITS:
        rows = [row for row in selected if split_of.get(row.uid) == name]
        filenames = [row.filename for row in rows]
        key = cache_name(name, data.projection, data.image_size, filenames)
        cache = load_or_build_cache(
            location.prepared_dir / "cache", key, parsed.image_root, filenames, data.image_size, data.cache_workers,
            label=f"{name} images", shared_prefix=shared_prefix,
        )  # fmt: skip
        kinds.update(cache.kinds)
        kept = [rows[i] for i in cache.kept]
        splits[name] = SplitData(
            name=name,
            uids=[row.uid for row in kept],
            filenames=[row.filename for row in kept],
            projections=[row.projection for row in kept],
            texts=[row.text for row in kept],
            images=cache.images,
        )
        artifacts[f"cache_{name}"] = str(cache.path)

    counts["images_undecodable"] = kinds["undecodable"]
    counts["images_16bit_converted"] = kinds["16bit"]
    counts["images_rgb_converted"] = kinds["rgb"]
    counts["images_kept"] = sum(len(split) for split in splits.values())
    counts["studies_kept"] = len({uid for split in splits.values() for uid in split.uids})
    for name, split in splits.items():
        counts[f"{name}_images"] = len(split)
        counts[f"{name}_studies"] = len(set(split.uids))
    return PreparedData(
        root=location.root, counts=counts, splits=splits, artifacts=artifacts, planted=location.planted,
        missing_studies=missing,
    )  # fmt: skip
