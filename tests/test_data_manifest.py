"""source=manifest on a synthetic dataset written as CSV, JSONL and Parquet manifests: counts equal an independent
count of the planted ground truth in each format, the manifest's split column is honoured by patient, report
sections are read from headers, bad input is one line with nothing half-written, and the smoke models train and
evaluate on a manifest."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from worker.config import ConfigError, RunConfig, load_config
from worker.data import load_prepared
from worker.data.readers import DataLayoutError, ReadOptions, manifest, reader_for
from worker.data.readers.manifest import projection_of, sections_of
from worker.data.sources import locate_dataset
from worker.data.synthetic_manifest import MANIFESTS, ensure_synthetic_manifest
from worker.recorder import MemoryRecorder

SPLIT_OF = {"train": "train", "val": "val", "test": "test"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("manifest") / "own-data"
    return root, ensure_synthetic_manifest(root, num_patients=40, seed=5)


def _config(smoke_config: RunConfig, manifest: Path, **overrides: object) -> RunConfig:
    settings = {"paths.var_dir": smoke_config.paths.var_dir, "data.source": "manifest", "data.data_dir": str(manifest)}
    return load_config("smoke", {**settings, **{k: str(v) for k, v in overrides.items()}})


def _expected(truth: dict, target: str) -> Counter:
    """What the reader must count, from the planted images alone: each image under its first failed check."""
    counts: Counter = Counter()
    for image in truth["images"]:
        study = truth["studies"][image["uid"]]
        text = study[target].strip() if target != "both" else (study["findings"] + study["impression"]).strip()
        if image["projection"] is None:
            counts["images_unknown_view"] += 1
        elif not image["exists"]:
            counts["images_missing_file"] += 1
        elif not text:
            counts["images_without_target"] += 1
        elif study["split"]:  # a study the manifest puts in no split is in none of the prepared splits
            counts["images_kept"] += 1
    counts["reports"] = len(truth["studies"])
    counts["rows_without_study_id"] = truth["rows_without_study_id"]
    counts["studies_not_in_official_split"] = sum(1 for s in truth["studies"].values() if not s["split"])
    return counts


@pytest.mark.parametrize("name", MANIFESTS)
def test_counts_equal_an_independent_count_in_every_format(
    smoke_config: RunConfig, dataset: tuple[Path, dict], name: str
) -> None:
    root, truth = dataset
    prepared = load_prepared(
        _config(smoke_config, root / name, **{"data.target": "findings", "data.projection": "both"})
    )
    expected = _expected(truth, "findings")
    assert {key: prepared.counts[key] for key in expected} == dict(expected)
    assert min(expected.values()) > 0  # every planted defect is there to count
    # The manifest's split, by patient; its studies without a split are in none.
    for split_name, split in prepared.splits.items():
        for uid in split.uids:
            assert SPLIT_OF[truth["studies"][uid]["split"]] == split_name
    kept = {(uid, f) for split in prepared.splits.values() for uid, f in zip(split.uids, split.filenames, strict=True)}
    assert any(Path(f).is_absolute() for _, f in kept) and any(not Path(f).is_absolute() for _, f in kept)


def test_the_three_formats_read_the_same_rows(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    reader = reader_for("manifest")
    parsed = [reader.parse(root / name, ReadOptions("both")) for name in MANIFESTS]
    assert parsed[0].rows == parsed[1].rows == parsed[2].rows
    assert parsed[0].official_split == parsed[1].official_split == parsed[2].official_split
    assert parsed[0].patients == parsed[2].patients and parsed[0].image_root == root
    assert reader.identity_files(root / "manifest.csv") == [root / "manifest.csv"]


def test_without_the_split_column_the_draw_is_by_patient(smoke_config: RunConfig, dataset: tuple[Path, dict]) -> None:
    root, truth = dataset
    prepared = load_prepared(_config(smoke_config, root / "manifest.jsonl", **{"data.official_split": "false"}))
    assert prepared.artifacts["split_manifest"].endswith("-by-patient.json")
    patient_split: dict[str, set[str]] = {}
    for name, split in prepared.splits.items():
        for uid in split.uids:
            patient_split.setdefault(truth["studies"][uid]["patient"], set()).add(name)
    assert all(len(names) == 1 for names in patient_split.values())
    assert "studies_not_in_official_split" not in prepared.counts


def test_view_positions_keep_the_named_views(smoke_config: RunConfig, dataset: tuple[Path, dict]) -> None:
    root, truth = dataset
    prepared = load_prepared(_config(smoke_config, root / "manifest.parquet", **{"data.view_positions": '["PA"]'}))
    pa = {image["path"] for image in truth["images"] if image["view"] == "PA"}
    names = [name for split in prepared.splits.values() for name in split.filenames]
    assert names and set(names) <= pa


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _nothing_prepared(config: RunConfig, manifest: Path) -> bool:
    prepared = Path(config.paths.var_dir) / "data" / "prepared"
    return not [p for p in prepared.glob(f"manifest-{manifest.name}-*/**/*") if p.is_file()]


def test_a_missing_column_is_one_line_naming_it(smoke_config: RunConfig, dataset: tuple[Path, dict], tmp_path: Path):
    root, _ = dataset
    manifest = _write_csv(tmp_path / "no-patient.csv", ["image_path", "study_id", "report"],
                          [[str(root / "images/p0001/s000001_1.png"), "S1", "IMPRESSION: clear."]])  # fmt: skip
    config = _config(smoke_config, manifest)
    with pytest.raises(DataLayoutError) as info:
        load_prepared(config)
    message = str(info.value)
    assert "\n" not in message and "missing column(s) patient_id" in message
    assert "found image_path, study_id, report" in message and "expected image_path (or image_paths)" in message
    assert _nothing_prepared(config, manifest)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("garbage.parquet", b"PAR1 this is not parquet", "cannot be read as a PARQUET manifest"),
        ("garbage.csv", b"\xff\xfe\x00\x81binary" * 40, "cannot be read as a CSV manifest"),
        ("bad.jsonl", b'{"study_id": "S1", "patient_id": "P1", "image_path": "a.png", "report": "x"}\n{oops\n',
         "line 2 is not a JSON object"),
        ("manifest.xlsx", b"whatever", "a manifest is a .csv, .jsonl or .parquet file"),
    ],
)  # fmt: skip
def test_an_unreadable_manifest_is_one_line(
    smoke_config: RunConfig, tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    manifest = tmp_path / name
    manifest.write_bytes(content)
    config = _config(smoke_config, manifest)
    with pytest.raises(ConfigError, match=match) as info:
        locate_dataset(config) if name != "bad.jsonl" else load_prepared(config)
    assert "\n" not in str(info.value)
    assert _nothing_prepared(config, manifest)


def test_a_missing_image_and_a_report_without_findings_are_counted(smoke_config: RunConfig, dataset, tmp_path: Path):
    root, _ = dataset
    image = str(root / "images/p0001/s000001_1.png")
    rows = [
        [image, "S1", "P1", "PA", "FINDINGS: The lungs are clear.\nIMPRESSION: Normal chest."],
        ["does/not/exist.png", "S1", "P1", "LATERAL", "FINDINGS: The lungs are clear.\nIMPRESSION: Normal chest."],
        [image, "S2", "P2", "AP", "IMPRESSION: No acute disease."],
    ]
    manifest = _write_csv(tmp_path / "small.csv", ["image_path", "study_id", "patient_id", "view", "report"], rows)
    parsed = reader_for("manifest").parse(manifest, ReadOptions("findings"))
    assert parsed.counts["images_missing_file"] == 1 and parsed.counts["images_without_target"] == 1
    assert [(row.uid, row.text, row.view) for row in parsed.rows] == [("S1", "the lungs are clear.", "PA")]
    assert parsed.filenames["S1"] == [image, "does/not/exist.png"]


def test_a_split_column_that_puts_a_patient_in_two_splits_is_refused(
    smoke_config: RunConfig, dataset: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = dataset
    image = str(root / "images/p0001/s000001_1.png")
    rows = [[image, "S1", "P1", "train", "IMPRESSION: a."], [image, "S2", "P1", "test", "IMPRESSION: b."]]
    manifest = _write_csv(tmp_path / "leaky.csv", ["image_path", "study_id", "patient_id", "split", "report"], rows)
    config = _config(smoke_config, manifest)
    with pytest.raises(ConfigError, match=r"patient P1 in test and train") as info:
        load_prepared(config)
    assert "\n" not in str(info.value) and "data.official_split=false" in str(info.value)
    assert _nothing_prepared(config, manifest)


def test_a_study_with_two_splits_or_an_unknown_split_is_one_line(tmp_path: Path) -> None:
    header = ["image_path", "study_id", "patient_id", "split", "impression"]
    two = _write_csv(
        tmp_path / "two.csv", header, [["a.png", "S1", "P1", "train", "x"], ["b.png", "S1", "P1", "val", "x"]]
    )
    with pytest.raises(DataLayoutError, match="row 2 puts study S1 in split 'val'"):
        reader_for("manifest").parse(two, ReadOptions("impression"))
    odd = _write_csv(tmp_path / "odd.csv", header, [["a.png", "S1", "P1", "holdout", "x"]])
    with pytest.raises(DataLayoutError, match="split 'holdout'; expected train, val or test"):
        reader_for("manifest").parse(odd, ReadOptions("impression"))


def test_a_study_given_another_patient_or_split_rows_later_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest is read in batches of rows: a study's later row is checked against its first row however
    many rows (and batches) lie between them."""
    header = ["image_path", "study_id", "patient_id", "split", "impression"]
    between = [[f"f{i}.png", f"S{i + 2}", "P9", "train", "x"] for i in range(10)]
    monkeypatch.setattr(manifest, "_BATCH", 4)
    first = ["a.png", "S1", "P1", "train", "x"]
    patient = _write_csv(tmp_path / "patient.csv", header, [first, *between, ["b.png", "S1", "P2", "train", "x"]])
    with pytest.raises(DataLayoutError, match=r"row 12 gives study S1 patient 'P2', but an earlier row gave it"):
        reader_for("manifest").parse(patient, ReadOptions("impression"))
    split = _write_csv(tmp_path / "split.csv", header, [first, *between, ["b.png", "S1", "P1", "test", "x"]])
    with pytest.raises(DataLayoutError, match=r"row 12 puts study S1 in split 'test', an earlier row in 'train'"):
        reader_for("manifest").parse(split, ReadOptions("impression"))


def test_a_study_whose_rows_are_far_apart_is_one_study(
    dataset: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = dataset
    with (root / "manifest.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    body = rows[1:]
    random.Random(3).shuffle(body)
    shuffled_csv = _write_csv(tmp_path / "manifest.csv", rows[0], body)
    for item in root.iterdir():  # the images, beside the manifest as the original's are
        if item.is_dir():
            (tmp_path / item.name).symlink_to(item)
    monkeypatch.setattr(manifest, "_BATCH", 4)
    shuffled = reader_for("manifest").parse(shuffled_csv, ReadOptions("both", scratch=tmp_path / "scratch"))
    monkeypatch.undo()
    adjacent = reader_for("manifest").parse(root / "manifest.csv", ReadOptions("both"))
    assert shuffled.counts == adjacent.counts
    rows_of = lambda parsed: {(r.uid, r.filename, r.patient, r.text, r.view) for r in parsed.rows}  # noqa: E731
    assert rows_of(shuffled) == rows_of(adjacent) and len(shuffled.rows) == len(adjacent.rows)
    assert shuffled.official_split == adjacent.official_split and shuffled.patients == adjacent.patients


@pytest.mark.parametrize(
    ("report", "sections"),
    [
        ("INDICATION: cough.\nFINDINGS: Lungs clear.\nIMPRESSION: Normal.", ("Lungs clear.", "Normal.")),
        ("Findings: heart normal. Impression: no acute disease.", ("heart normal.", "no acute disease.")),
        ("IMPRESSION: 1. Small effusion.\nRECOMMENDATION: follow up.", ("", "1. Small effusion.")),
        ("No acute cardiopulmonary process.", ("", "No acute cardiopulmonary process.")),
        ("COMPARISON: none.", ("", "")),
    ],
)
def test_sections_are_read_from_the_reports_headers(report: str, sections: tuple[str, str]) -> None:
    assert sections_of(report) == sections


def test_view_spellings() -> None:
    assert projection_of("PA") == ("Frontal", "PA") and projection_of("ap supine") == ("Frontal", "AP SUPINE")
    assert projection_of("Frontal") == ("Frontal", "") and projection_of("Lateral") == ("Lateral", "LATERAL")
    assert projection_of("LL") == ("Lateral", "LL") and projection_of("") == ("Frontal", "")
    assert projection_of("OBLIQUE") is None


@pytest.mark.slow
def test_smoke_models_train_and_evaluate_on_a_manifest(smoke_config: RunConfig, tmp_path: Path) -> None:
    from worker.generation.evaluate import evaluate
    from worker.generation.stage import train_full
    from worker.siglip.stage import train_siglip

    # A small copy: evaluation's cost (METEOR over the model's and every baseline's texts) grows with the test split.
    root = tmp_path / "own-data-small"
    ensure_synthetic_manifest(root, num_patients=15, seed=6)
    config = _config(smoke_config, root / "manifest.parquet", **{"train.epochs": 1, "generation.epochs": 1})
    prepared = load_prepared(config)
    siglip = train_siglip(config, MemoryRecorder())
    generator = train_full(config, MemoryRecorder(), siglip_checkpoint=siglip.metrics["best_checkpoint"])
    result = evaluate(config, MemoryRecorder(), checkpoint=generator.metrics["best_checkpoint"])
    scored = {json.loads(line)["uid"] for line in Path(result.artifacts["predictions"]).read_text().splitlines()}
    assert scored and scored <= set(prepared.split("test").uids)
    assert result.metrics["train_overlap"] == 0 and 0.0 <= result.metrics["bleu1"] <= 1.0


def test_the_prepare_data_stage_reports_a_manifests_counts(
    smoke_config: RunConfig, dataset: tuple[Path, dict], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from worker.data.stage import prepare_data

    root, truth = dataset
    with caplog.at_level(logging.INFO, logger="worker.data.stage"):
        result = prepare_data(_config(smoke_config, root / "manifest.csv"), MemoryRecorder())
    assert result.status == "succeeded" and result.metrics["reports"] == len(truth["studies"])
    summary = " ".join(record.getMessage() for record in caplog.records)
    assert f"{result.metrics['images_missing_file']} images missing file" in summary
    assert "studies in manifest split" not in summary


def test_a_job_naming_a_missing_manifest_is_refused_before_it_runs(smoke_config: RunConfig, tmp_path: Path) -> None:
    from jobs.core.locations import missing_input

    problem = missing_input(_config(smoke_config, tmp_path / "nowhere.csv"), {})
    assert problem and problem.startswith("data.data_dir:") and "does not exist" in problem
