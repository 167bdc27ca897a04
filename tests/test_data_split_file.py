"""A fixed split from an R2Gen-style annotation.json: studies found by R2Gen's ids or image names, the
split taken as the file gives it, and the studies the local copy lacks named, not a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.config import RunConfig
from worker.data import PreparedData, load_prepared
from worker.data.split_file import SplitFileError, fixed_split, image_keys, match_study
from worker.data.stage import prepare_data
from worker.recorder import MemoryRecorder

# File names as in the Kaggle copy, for R2Gen ids of both forms ("CXR<uid>_IM-..." and "CXR1_1_IM-0001").
KAGGLE_FILES = {
    "1": ["1_IM-0001-3001.dcm.png", "1_IM-0001-4001.dcm.png"],
    "2": ["2_IM-0652-1001.dcm.png", "2_IM-0652-2001.dcm.png"],
    "2384": ["2384_IM-0942-1001.dcm.png"],
    "5": ["5_IM-2117-1003002.dcm.png"],
    "7": ["7_IM-2263-1001.dcm.png"],
}


@pytest.mark.parametrize(
    ("entry", "uid"),
    [
        ({"id": "CXR1_1_IM-0001", "image_path": ["CXR1_1_IM-0001/0.png", "CXR1_1_IM-0001/1.png"]}, "1"),
        ({"id": "CXR2_IM-0652", "image_path": ["CXR2_IM-0652/0.png"]}, "2"),
        ({"id": "CXR2384_IM-0942"}, "2384"),
        # The id alone does not match: its image file names do.
        ({"id": "study-a", "image_path": ["images/CXR7_IM-2263-1001.png"]}, "7"),
        ({"id": "study-b", "image_path": ["images_normalized/2384_IM-0942-1001.dcm.png"]}, "2384"),
        ({"id": "CXR5_IM-2117", "image_path": ["CXR5_IM-2117/0.png"]}, "5"),
        # No image name matches, but the uid in the id is a local study.
        ({"id": "CXR7_IM-0001", "image_path": ["CXR7_IM-0001/0.png"]}, "7"),
        ({"id": "CXR9999_IM-0001", "image_path": ["CXR9999_IM-0001/0.png"]}, None),
        ({"id": "study-c", "image_path": ["x/0.png"]}, None),
    ],
)
def test_match_study(entry: dict, uid: str | None) -> None:
    assert match_study(entry, image_keys(KAGGLE_FILES), set(KAGGLE_FILES)) == uid


def _write(path: Path, annotation: dict) -> str:
    path.write_text(json.dumps(annotation))
    return str(path)


def test_a_study_in_two_splits_or_a_malformed_file_is_refused(tmp_path: Path) -> None:
    twice = {"train": [{"id": "CXR2_IM-0652"}], "val": [], "test": [{"id": "CXR2_IM-0652"}]}
    with pytest.raises(SplitFileError, match="in both train and test"):
        fixed_split(_write(tmp_path / "a.json", twice), KAGGLE_FILES, KAGGLE_FILES)
    with pytest.raises(SplitFileError, match="list of objects with an 'id'"):
        fixed_split(_write(tmp_path / "b.json", {"train": [{"report": "x"}]}), KAGGLE_FILES, KAGGLE_FILES)
    with pytest.raises(SplitFileError, match="does not exist"):
        fixed_split(str(tmp_path / "nope.json"), KAGGLE_FILES, KAGGLE_FILES)


def _r2gen_id(filename: str) -> str:
    """R2Gen's id for a study with this Kaggle image: CXR<uid>_IM-xxxx."""
    return "CXR" + filename.rsplit("-", 1)[0]


def test_split_file_fixes_the_split_and_names_the_missing_studies(
    tmp_path: Path, smoke_config: RunConfig, smoke_prepared: PreparedData
) -> None:
    planted = smoke_prepared.planted
    kept = {uid for split in smoke_prepared.splits.values() for uid in split.uids}
    drawn = {name: sorted(set(split.uids), key=int) for name, split in smoke_prepared.splits.items()}
    # Move studies across the drawn split, so that only the file can explain where they land.
    chosen = {"train": drawn["test"][:20] + drawn["val"][:5], "val": drawn["train"][:8], "test": drawn["train"][8:20]}
    missing = {"train": ["CXR90001_IM-9001"], "val": [], "test": ["CXR90002_IM-9002", "CXR90003_IM-9003"]}
    ids = {name: [_r2gen_id(planted.filenames[uid][0]) for uid in chosen[name]] + missing[name] for name in chosen}
    annotation = {
        name: [{"id": i, "report": "", "image_path": [f"{i}/0.png"], "split": name} for i in ids[name]]
        for name in ("train", "val", "test")
    }
    split_file = _write(tmp_path / "annotation.json", annotation)
    config = smoke_config.model_copy(update={"data": smoke_config.data.model_copy(update={"split_file": split_file})})

    result = prepare_data(config, MemoryRecorder())
    prepared = load_prepared(config)
    for name in ("train", "val", "test"):
        assert set(prepared.split(name).uids) == set(chosen[name]) & kept, name
    assert result.metrics["split_file_missing_studies"] == missing
    named = sum(len(uids) for uids in chosen.values())
    assert result.metrics["split_file_missing"] == 3 and result.metrics["split_file_missing_test"] == 2
    assert result.metrics["split_file_studies"] == named + 3
    assert result.metrics["studies_not_in_split_file"] == planted.num_studies - named
    manifest = json.loads(Path(result.artifacts["split_manifest"]).read_text())
    assert manifest["missing"] == missing and manifest["uids"]["val"] == chosen["val"]
