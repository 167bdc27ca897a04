"""Splits by study uid: no leakage, seeded, stored in a manifest and reused."""

from __future__ import annotations

import json
from pathlib import Path

from worker.config import RunConfig, load_config
from worker.data import PreparedData, load_prepared
from worker.data.splits import assign_splits, load_or_create_manifest

UIDS = [str(i) for i in range(1, 501)]
FRACTIONS = (0.7, 0.1, 0.2)


def test_split_is_a_partition_with_the_requested_sizes() -> None:
    splits = assign_splits(UIDS, seed=1, fractions=FRACTIONS)
    sets = [set(part) for part in splits.values()]
    assert sum(len(s) for s in sets) == len(UIDS) and set().union(*sets) == set(UIDS)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [350, 50, 100]


def test_same_seed_same_split_other_seed_other_split() -> None:
    assert assign_splits(UIDS, 1, FRACTIONS) == assign_splits(list(reversed(UIDS)), 1, FRACTIONS)
    assert assign_splits(UIDS, 1, FRACTIONS)["test"] != assign_splits(UIDS, 2, FRACTIONS)["test"]


def test_manifest_is_reused_not_redrawn(tmp_path: Path) -> None:
    first, path = load_or_create_manifest(tmp_path, UIDS, 7, FRACTIONS)
    # Edit the stored split: a reuse returns the file's content, a redraw would not.
    stored = json.loads(path.read_text())
    stored["uids"]["train"], stored["uids"]["test"] = stored["uids"]["test"], stored["uids"]["train"]
    path.write_text(json.dumps(stored))
    again, again_path = load_or_create_manifest(tmp_path, UIDS, 7, FRACTIONS)
    assert again_path == path
    assert again["train"] == first["test"]


def test_manifest_for_other_studies_is_redrawn(tmp_path: Path) -> None:
    load_or_create_manifest(tmp_path, UIDS, 7, FRACTIONS)
    splits, _ = load_or_create_manifest(tmp_path, UIDS[:100], 7, FRACTIONS)
    assert sorted(uid for part in splits.values() for uid in part) == sorted(UIDS[:100])


def test_prepared_splits_share_no_uid(smoke_prepared: PreparedData) -> None:
    uid_sets = {name: set(split.uids) for name, split in smoke_prepared.splits.items()}
    assert not uid_sets["train"] & uid_sets["val"]
    assert not uid_sets["train"] & uid_sets["test"]
    assert not uid_sets["val"] & uid_sets["test"]
    assert all(uid_sets.values())
    manifest = json.loads(Path(smoke_prepared.artifacts["split_manifest"]).read_text())
    for name, uids in uid_sets.items():
        assert uids <= set(manifest["uids"][name])


def test_split_seed_changes_the_manifest_not_the_dataset(smoke_config: RunConfig, smoke_prepared: PreparedData) -> None:
    other = load_prepared(load_config("smoke", {"paths.var_dir": smoke_config.paths.var_dir, "data.split_seed": 43}))
    assert other.root == smoke_prepared.root
    assert other.artifacts["split_manifest"] != smoke_prepared.artifacts["split_manifest"]
    assert set(other.split("test").uids) != set(smoke_prepared.split("test").uids)
    assert other.counts["images_kept"] == smoke_prepared.counts["images_kept"]


def test_the_run_seed_leaves_the_split_alone(smoke_config: RunConfig, smoke_prepared: PreparedData) -> None:
    other = load_prepared(load_config("smoke", {"paths.var_dir": smoke_config.paths.var_dir, "seed": 7}))
    assert other.artifacts["split_manifest"] == smoke_prepared.artifacts["split_manifest"]
    for name in ("train", "val", "test"):
        assert other.split(name).uids == smoke_prepared.split(name).uids
