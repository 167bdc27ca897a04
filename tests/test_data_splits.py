"""Splits by study uid: no leakage, seeded, stored in a manifest and reused."""

from __future__ import annotations

import json
import random
from pathlib import Path

from worker.config import RunConfig, load_config
from worker.data import PreparedData, load_prepared
from worker.data.splits import _groups, _uid_order, assign_splits, load_or_create_manifest, uid_order

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


def _old_uid_order(values: list[str]) -> list[int]:
    """The order before uid_order sorted text as bytes: numbers of at most 18 digits by value, then the rest by
    ``_uid_order``'s key, ties in input order."""
    short = [i for i, v in enumerate(values) if v.isdigit() and len(v) <= 18]
    rest = [i for i, v in enumerate(values) if not (v.isdigit() and len(v) <= 18)]
    return sorted(short, key=lambda i: int(values[i])) + sorted(rest, key=lambda i: _uid_order(values[i]))


def _random_ids(rng: random.Random, text_only: bool, nul: bool) -> list[str]:
    alphabet = "ab/Zé中0129-_ \u00ff\U0001f600" + ("\0" if nul else "")
    values: list[str] = []
    for _ in range(rng.randint(0, 60)):
        kind = 1.0 if text_only else rng.random()
        if kind < 0.3:
            values.append(str(rng.randint(0, 10**6)))
        elif kind < 0.4:
            values.append(str(rng.randint(10**18, 10**20)))
        elif kind < 0.45:
            values.append("0" * rng.randint(1, 20) + str(rng.randint(0, 99)))
        elif rng.random() < 0.15 and values:
            values.append(rng.choice(values))
        else:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
            values.append(text if not text.isdigit() else f"x{text}")
    return values


def test_uid_order_and_patient_groups_keep_the_python_order() -> None:
    """uid_order sorts text as UTF-8 bytes and _groups groups text keys with numpy: the same order and groups as
    the Python key sort, over numbers, leading zeros, numbers too long for int64, repeats, non-ASCII text and
    NUL characters (which take the Python sort)."""
    rng = random.Random(1)
    for trial in range(400):
        values = _random_ids(rng, text_only=trial % 2 == 1, nul=trial % 8 >= 6)
        assert uid_order(values).tolist() == _old_uid_order(values), values
        groups, count = _groups(values)
        distinct = list(dict.fromkeys(values))
        rank = {distinct[i]: r for r, i in enumerate(_old_uid_order(distinct))}
        assert groups.tolist() == [rank[v] for v in values] and count == len(distinct), values
