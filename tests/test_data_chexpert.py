"""source=chexpert-plus on a synthetic copy of CheXpert Plus's layout: counts equal an independent count of the
planted ground truth, CheXpert Plus's own split (train, valid) is honoured with its test drawn from train by
patient, no patient is in two splits, bad input is one line, and the smoke models train and evaluate on it."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from worker.config import ConfigError, RunConfig, load_config
from worker.data import load_prepared
from worker.data.readers import DataLayoutError, ReadOptions, chexpert_plus, reader_for
from worker.data.readers.chexpert_plus import CHEXPERT_PLUS_CSV, study_of
from worker.data.sources import locate_dataset
from worker.data.synthetic_chexpert import ensure_synthetic_chexpert
from worker.recorder import MemoryRecorder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("chexpert") / "chexpert-plus"
    return root, ensure_synthetic_chexpert(root, num_patients=40, seed=3)


def _config(smoke_config: RunConfig, root: Path, **overrides: object) -> RunConfig:
    settings = {"paths.var_dir": smoke_config.paths.var_dir, "data.source": "chexpert-plus", "data.data_dir": str(root)}
    return load_config("smoke", {**settings, **{k: str(v) for k, v in overrides.items()}})


def _expected(truth: dict, target: str, projection: str = "both") -> Counter:
    """The reader's and selection's counts, from the planted rows alone: each row under its first failed check."""
    counts: Counter = Counter()
    for row in truth["rows"]:
        study = truth["studies"].get(row["uid"] or "")
        sections = {
            "findings": study and study["findings"].strip(),
            "impression": study and study["impression"].strip(),
        }
        has_target = (
            bool(sections["findings"] or sections["impression"]) if target == "both" else bool(sections[target])
        )
        if row["uid"] is None:
            counts["rows_bad_path"] += 1
        elif row["projection"] not in ("Frontal", "Lateral"):
            counts["rows_unknown_projection"] += 1
        elif row["file"] is None:
            counts["rows_missing_file"] += 1
        elif not has_target:
            counts["rows_without_target"] += 1
        elif projection != "both" and row["projection"] != projection:
            counts["rows_other_projection"] += 1
        else:
            counts["images_kept"] += 1
    counts["reports"] = len(truth["studies"])
    return counts


@pytest.mark.parametrize(("target", "projection"), [("findings", "both"), ("impression", "Frontal")])
def test_counts_equal_an_independent_count_of_the_planted_rows(
    smoke_config: RunConfig, dataset: tuple[Path, dict], target: str, projection: str
) -> None:
    root, truth = dataset
    prepared = load_prepared(_config(smoke_config, root, **{"data.target": target, "data.projection": projection}))
    expected = _expected(truth, target, projection)
    assert {name: prepared.counts[name] for name in expected} == dict(expected)
    assert prepared.counts["image_rows"] == len(truth["rows"])
    assert min(expected.values()) > 0  # every planted defect is there to count
    # Every kept image is the study's own, with its text and patient.
    for split in prepared.splits.values():
        for uid, filename in zip(split.uids, split.filenames, strict=True):
            assert filename.startswith(f"PNG/train/{uid}/") and filename.endswith(".png")


def test_the_official_split_is_honoured_and_its_test_is_drawn_from_train_by_patient(
    smoke_config: RunConfig, dataset: tuple[Path, dict]
) -> None:
    root, truth = dataset
    config = _config(smoke_config, root)
    prepared = load_prepared(config)
    manifest = json.loads(Path(prepared.artifacts["split_manifest"]).read_text())
    splits = manifest["uids"]
    assert set(splits["val"]) == {uid for uid, s in truth["studies"].items() if s["split"] == "valid"}
    train_patients = {uid for uid, s in truth["studies"].items() if s["split"] == "train"}
    assert set(splits["train"]) | set(splits["test"]) == train_patients
    assert manifest["test_drawn_from_train"] == {"seed": config.data.split_seed, "fractions": [0.7, 0.1, 0.2]}
    share = len(splits["test"]) / len(train_patients)
    assert 0.1 < share < 0.35  # 2/9 of train's studies, within a patient's studies
    patient_split: dict[str, set[str]] = {}
    for name, uids in splits.items():
        for uid in uids:
            patient_split.setdefault(truth["studies"][uid]["patient"], set()).add(name)
    assert all(len(names) == 1 for names in patient_split.values())
    assert prepared.counts["official_split_test_drawn_from_train"] == len(splits["test"])
    assert "CheXpert Plus's split column" in config.data.describe_split()


def test_without_the_official_split_the_draw_is_by_patient(smoke_config: RunConfig, dataset: tuple[Path, dict]) -> None:
    root, truth = dataset
    prepared = load_prepared(_config(smoke_config, root, **{"data.official_split": "false"}))
    assert prepared.artifacts["split_manifest"].endswith("-by-patient.json")
    patient_split: dict[str, set[str]] = {}
    for name, split in prepared.splits.items():
        for uid in split.uids:
            patient_split.setdefault(truth["studies"][uid]["patient"], set()).add(name)
    assert all(len(names) == 1 for names in patient_split.values())


def test_view_positions_come_from_ap_pa(smoke_config: RunConfig, dataset: tuple[Path, dict]) -> None:
    root, truth = dataset
    prepared = load_prepared(_config(smoke_config, root, **{"data.view_positions": '["PA"]'}))
    pa = {row["path"][: -len(".jpg")] for row in truth["rows"] if row["view"] == "PA"}
    for split in prepared.splits.values():
        assert all(f"{name[len('PNG/') : -len('.png')]}" in pa for name in split.filenames)
    assert prepared.counts["rows_other_view"] > 0


def test_the_study_is_the_patient_and_study_folders_of_the_path() -> None:
    assert study_of("train/patient00042/study3/view1_frontal.jpg") == ("patient00042/study3", "patient00042")
    assert study_of("valid/patient64541/study1/view2_lateral.jpg") == ("patient64541/study1", "patient64541")
    assert study_of("train/patient00042/view1_frontal.jpg") is None


def test_a_study_whose_rows_are_far_apart_is_one_study(
    dataset: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV is read in batches of rows: a study's rows in different batches are still one study, with the
    same rows and counts as when they are adjacent."""
    root, truth = dataset

    def shuffle(source: Path, target: Path) -> None:
        with source.open(newline="") as handle:
            rows = list(csv.reader(handle))
        body = rows[1:]
        random.Random(7).shuffle(body)
        with target.open("w", newline="") as handle:
            csv.writer(handle).writerows([rows[0], *body])

    copy = _copy_with_csv(root, tmp_path / "shuffled", shuffle)
    monkeypatch.setattr(chexpert_plus, "_BATCH", 4)
    shuffled = reader_for("chexpert-plus").parse(copy, ReadOptions("findings", scratch=tmp_path / "scratch"))
    monkeypatch.undo()
    adjacent = reader_for("chexpert-plus").parse(root, ReadOptions("findings"))
    expected = _expected(truth, "findings")
    assert len(shuffled.rows) == expected.pop("images_kept")
    assert {name: shuffled.counts[name] for name in expected} == dict(expected)
    for name in ("patients", "studies_without_target", "studies_frontal_only", "studies_lateral_only"):
        assert shuffled.counts[name] == adjacent.counts[name], name
    rows = {(row.uid, row.filename, row.patient, row.text, row.view) for row in adjacent.rows}
    assert {(row.uid, row.filename, row.patient, row.text, row.view) for row in shuffled.rows} == rows
    assert shuffled.official_split == adjacent.official_split


def _copy_with_csv(source: Path, out: Path, rewrite) -> Path:
    out.mkdir(parents=True)
    (out / "PNG").symlink_to(source / "PNG")
    rewrite(source / CHEXPERT_PLUS_CSV, out / CHEXPERT_PLUS_CSV)
    return out


def test_a_missing_column_is_one_line_and_nothing_is_written(
    smoke_config: RunConfig, dataset: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = dataset

    def drop_findings(src: Path, dst: Path) -> None:
        with src.open(newline="") as f:
            rows = list(csv.DictReader(f))
        with dst.open("w", newline="") as f:
            writer = csv.DictWriter(
                f, fieldnames=[c for c in rows[0] if c != "section_findings"], extrasaction="ignore"
            )
            writer.writeheader()
            writer.writerows(rows)

    copy = _copy_with_csv(root, tmp_path / "no-findings", drop_findings)
    config = _config(smoke_config, copy)
    with pytest.raises(DataLayoutError) as info:
        load_prepared(config)
    message = str(info.value)
    assert "\n" not in message and "missing column(s) section_findings" in message
    assert "found path_to_image" in message and "expected path_to_image, frontal_lateral" in message
    prepared_dir = Path(config.paths.var_dir) / "data" / "prepared"
    assert not any(p.name.startswith("chexpert-plus-no-findings") for p in prepared_dir.glob("*"))


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, f"{CHEXPERT_PLUS_CSV} is missing"), (b"\xff\xfe\x00garbage\x81" * 50, "cannot be read")],
)
def test_a_missing_or_unreadable_csv_is_one_line(
    smoke_config: RunConfig, tmp_path: Path, content: bytes | None, match: str
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    if content is not None:
        (folder / CHEXPERT_PLUS_CSV).write_bytes(content)
    with pytest.raises(ConfigError, match=match) as info:
        locate_dataset(_config(smoke_config, folder))
    assert "\n" not in str(info.value)


def test_identity_is_the_report_csv(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    assert reader_for("chexpert-plus").identity_files(root) == [root / CHEXPERT_PLUS_CSV]
    parsed = reader_for("chexpert-plus").parse(root, ReadOptions("impression"))
    assert parsed.image_root == root and parsed.patients and set(parsed.official_split.values()) == {"train", "val"}


@pytest.mark.slow
def test_smoke_models_train_and_evaluate_on_chexpert_plus(smoke_config: RunConfig, tmp_path: Path) -> None:
    from worker.generation.evaluate import evaluate
    from worker.generation.stage import train_full
    from worker.siglip.stage import train_siglip

    # A small copy: evaluation's cost (METEOR over the model's and every baseline's texts) grows with the test split.
    root = tmp_path / "chexpert-small"
    ensure_synthetic_chexpert(root, num_patients=15, seed=4)
    config = _config(smoke_config, root, **{"train.epochs": 1, "generation.epochs": 1, "data.target": "impression"})
    prepared = load_prepared(config)
    siglip = train_siglip(config, MemoryRecorder())
    generator = train_full(config, MemoryRecorder(), siglip_checkpoint=siglip.metrics["best_checkpoint"])
    result = evaluate(config, MemoryRecorder(), checkpoint=generator.metrics["best_checkpoint"])
    scored = {json.loads(line)["uid"] for line in Path(result.artifacts["predictions"]).read_text().splitlines()}
    assert scored and scored <= set(prepared.split("test").uids)
    assert result.metrics["train_overlap"] == 0 and 0.0 <= result.metrics["bleu1"] <= 1.0
