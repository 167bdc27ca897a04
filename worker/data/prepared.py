"""``load_prepared``: everything the training stages need from the data, built once and reused.

Steps, each reusing what an earlier run left: tiny model fixtures (smoke only) -> dataset folder
(generated, downloaded or local) -> the dataset's studies and images as columns, with counts of what was
dropped (the layout's reader, worker.data.readers) -> the views the run keeps (worker.data.selection) ->
split manifest by study (the dataset's official split, ``data.split_file``, or drawn by patient where there
are patient ids) -> one image cache per split -> the splits' columns written as the prepared index
(worker.data.prepared_index). A later call with the same settings on the same dataset files memory-maps the
index and the caches and reads nothing else: no process after the data stage holds an object per image.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.base_models import base_dir
from worker.config import RunConfig
from worker.data.cache import cache_name, load_or_build_cache
from worker.data.columns import StringColumn, distinct
from worker.data.heap import release_free_memory
from worker.data.prepared_index import index_folder, load_index, remove_abandoned, save_index, scratch_folder
from worker.data.readers import ParsedDataset, ReadOptions, reader_for
from worker.data.readers.base import PROJECTION_CODES
from worker.data.rows import RowView, pick_rows
from worker.data.selection import select_images
from worker.data.sources import locate_dataset
from worker.data.split_file import fixed_split, manifest_name
from worker.data.splits import (
    SPLITS,
    check_patient_disjoint,
    check_patient_disjoint_codes,
    load_or_create_split,
    manifest_path,
    test_from_train,
    write_manifest,
    write_split_manifest,
)
from worker.data.synthetic import PLANTED_JSON, Planted


@dataclass(frozen=True, eq=False)
class SplitData:
    """One split's images and texts, row-aligned: row i of every column belongs to images[i]. The columns read
    like lists of strings (worker.data.columns.StringColumn) and are memory-mapped from the prepared index."""

    name: str
    uids: StringColumn
    filenames: StringColumn
    projections: StringColumn
    texts: StringColumn
    """Cleaned target text (impression, or findings per config.data.target)."""
    images: np.ndarray | RowView
    """uint8 [N, S, S] grayscale, memory-mapped from the cache (or a view of some of its rows)."""

    def __post_init__(self) -> None:
        for column in ("uids", "filenames", "projections", "texts"):  # lists (tests, small data) become columns
            if not isinstance(values := getattr(self, column), StringColumn):
                object.__setattr__(self, column, StringColumn.from_strings(values))

    def __len__(self) -> int:
        return len(self.filenames)

    def take(self, rows: np.ndarray) -> SplitData:
        """These rows of the split; its images are a view of the cache's rows, read on access."""
        return SplitData(
            name=self.name, uids=self.uids.take(rows), filenames=self.filenames.take(rows),
            projections=self.projections.take(rows), texts=self.texts.take(rows), images=pick_rows(self.images, rows),
        )  # fmt: skip

    def without(self, uids: Collection[str]) -> SplitData:
        """This split without the rows of the given studies (nothing is copied out of the cache)."""
        drop = self.uids.rows_in(uids)
        return self.take(np.flatnonzero(~drop)) if drop.any() else self


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


_SplitCodes = tuple[np.ndarray, Path, dict[str, list[str]], dict[str, int]]
"""Each study's split code (-1: in none), the manifest's path, with a split file the ids it names that are
missing here, and the split's counts."""


def _split_codes(config: RunConfig, prepared_dir: Path, parsed: ParsedDataset) -> _SplitCodes:
    data = config.data
    if data.split_file:
        return _file_split(config, prepared_dir, parsed)
    studies = parsed.studies
    if data.official_split and (studies.official >= 0).any():
        return _official_split(config, prepared_dir, parsed)
    reported = np.flatnonzero(studies.has_report)
    uids = studies.uid.take(reported)
    patients = studies.patient.take(reported) if any(studies.patient.values()) else None
    codes, path = load_or_create_split(prepared_dir, uids, data.split_seed, tuple(data.split_fractions), patients)
    return _per_study(len(studies), reported, codes), path, {}, {}


def _per_study(total: int, rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
    out = np.full(total, -1, dtype=np.int8)
    out[rows] = codes
    return out


def _file_split(config: RunConfig, prepared_dir: Path, parsed: ParsedDataset) -> _SplitCodes:
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
    code_of = {uid: SPLITS.index(name) for name, part in fixed.uids.items() for uid in part}
    uids = parsed.studies.uid
    codes = np.fromiter((code_of.get(uid, -1) for uid in uids), dtype=np.int8, count=len(uids))
    return codes, path, fixed.missing, counts


def _official_split(config: RunConfig, prepared_dir: Path, parsed: ParsedDataset) -> _SplitCodes:
    """The dataset's own split, checked to keep each patient on one side; reports it leaves out are counted.
    A split without test studies (CheXpert Plus's has train and valid only) gets its test split drawn from its
    train studies by patient, with data.split_seed and the test share of data.split_fractions."""
    studies = parsed.studies
    codes = np.where(studies.has_report, studies.official, -1).astype(np.int8)
    counts = {"studies_not_in_official_split": int((studies.has_report & (studies.official < 0)).sum())}
    check_patient_disjoint_codes(studies.patient, codes, "the dataset's official split")
    content: dict = {"official": True}
    name = "splits-official.json"
    train = np.flatnonzero(codes == 0)
    if len(train) and not (codes == 2).any():
        data = config.data
        test = test_from_train(studies.uid, studies.patient, train, data.split_seed, tuple(data.split_fractions))
        codes[test] = 2
        counts["official_split_test_drawn_from_train"] = len(test)
        content["test_drawn_from_train"] = {"seed": data.split_seed, "fractions": list(data.split_fractions)}
        name = manifest_path(prepared_dir, data.split_seed, tuple(data.split_fractions)).name.replace(
            "splits-", "splits-official-test-"
        )
    path = write_split_manifest(prepared_dir, name, content, studies.uid, codes)
    return codes, path, {}, counts


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
    """Build whatever is missing (dataset, tiny models, manifest, caches, index) and return the splits."""
    artifacts: dict[str, str] = {}
    if config.model.build_tiny_fixtures:
        from worker.fixtures.tiny_models import ensure_tiny_models  # pulls in torch: only when asked

        ensure_tiny_models(config)
        artifacts["siglip_model"] = base_dir(config, "siglip")
        artifacts["biogpt_model"] = base_dir(config, "biogpt")
    location = locate_dataset(config)
    folder = index_folder(config, location.root, location.prepared_dir)
    if (stored := load_index(folder)) is None:
        remove_abandoned(location.prepared_dir)
        scratch = scratch_folder(location.prepared_dir)
        try:
            save_index(folder, *_prepare(config, location.root, location.prepared_dir, scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if (stored := load_index(folder)) is None:  # memory-mapped from the index, not from the scratch folder
            raise RuntimeError(f"the prepared index {folder} was written but cannot be read back")
    columns, counts, saved, missing = stored
    splits = {name: SplitData(name=name, **fields) for name, fields in columns.items()}
    artifacts |= saved
    artifacts["prepared_index"] = str(folder)
    if location.planted is not None:
        artifacts["planted"] = str(location.root / PLANTED_JSON)
    return PreparedData(
        root=location.root, counts=counts, splits=splits, artifacts=artifacts, planted=location.planted,
        missing_studies=missing,
    )  # fmt: skip


def _prepare(
    config: RunConfig, root: Path, prepared_dir: Path, scratch: Path
) -> tuple[dict[str, SplitData], dict[str, int], dict[str, str], dict[str, list[str]], Path]:
    """Read the dataset, select, split and cache: the splits (their strings in ``scratch``), counts, artifacts,
    the studies a split file names that are missing, and the folder the images were read from."""
    data = config.data
    parsed = reader_for(data.source).parse(root, ReadOptions(data.target, config.eval.protocol, scratch))
    release_free_memory()
    kept, selection_counts = select_images(parsed.images, data)
    study_codes, manifest_file, missing, split_counts = _split_codes(config, prepared_dir, parsed)
    release_free_memory()
    counts = parsed.counts | selection_counts | split_counts
    artifacts = {"dataset_root": str(root), "prepared_dir": str(prepared_dir), "split_manifest": str(manifest_file)}

    images, studies = parsed.images, parsed.studies
    split_of_image = study_codes[images.study[kept]]
    splits: dict[str, SplitData] = {}
    studies_per_split: dict[str, int] = {}
    kinds: Counter[str] = Counter()
    shared_prefix = shared_cache_prefix(config, prepared_dir)
    for code, name in enumerate(SPLITS):
        rows = kept[split_of_image == code]
        filenames = images.filename.take(rows)
        key = cache_name(name, data.projection, data.image_size, filenames)
        cache = load_or_build_cache(
            prepared_dir / "cache", key, parsed.image_root, filenames, data.image_size, data.cache_workers,
            label=f"{name} images", shared_prefix=shared_prefix,
        )  # fmt: skip
        kinds.update(cache.kinds)
        release_free_memory()
        rows = rows[cache.kept]
        study = images.study[rows]
        splits[name] = SplitData(
            name=name, uids=studies.uid.take(study), filenames=images.filename.take(rows),
            projections=StringColumn.from_values(PROJECTION_CODES, images.projection[rows]),
            texts=studies.text.take(study), images=cache.images,
        )  # fmt: skip
        artifacts[f"cache_{name}"] = str(cache.path)
        studies_per_split[name] = len(distinct(study)[0])

    counts["images_undecodable"] = kinds["undecodable"]
    counts["images_16bit_converted"] = kinds["16bit"]
    counts["images_rgb_converted"] = kinds["rgb"]
    counts["images_kept"] = sum(len(split) for split in splits.values())
    counts["studies_kept"] = sum(studies_per_split.values())  # a study is in one split
    for name, split in splits.items():
        counts[f"{name}_images"] = len(split)
        counts[f"{name}_studies"] = studies_per_split[name]
    return splits, counts, artifacts, missing, parsed.image_root
