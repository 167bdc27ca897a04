"""The mimic-cxr source on synthetic MIMIC-CXR-JPG folders, in both report forms (report files, R2Gen's
annotation.json): counts against the generator's planted ground truth, the official split by patient, the
section parser, R2Gen's MIMIC cleaning, bad input in one line, and train + evaluate on the smoke models."""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from worker.config import ConfigError, RunConfig, load_config
from worker.data.cleaning import clean_target, r2gen_mimic_prepare
from worker.data.identity import dataset_fingerprint
from worker.data.prepared import load_prepared
from worker.data.readers import DataLayoutError, ReadOptions, mimic_cxr, reader_for
from worker.data.readers.mimic_cxr import report_sections
from worker.data.splits import check_patient_disjoint
from worker.data.synthetic_mimic import MimicPlanted, generate_mimic

FORMS = ("reports", "annotation")
KNOWN_VIEWS = {"PA", "AP", "LATERAL", "LL"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, MimicPlanted]]:
    base = tmp_path_factory.mktemp("mimic")
    out = {}
    for form in FORMS:
        root = base / form
        out[form] = (root, generate_mimic(root, 360, seed=3, form=form, size=32))
    return out


def _config(var: Path, root: Path, **overrides: str) -> RunConfig:
    settings = {"paths.var_dir": str(var), "data.source": "mimic-cxr", "data.data_dir": str(root),
                "data.target": "findings", **overrides}  # fmt: skip
    return load_config("smoke", settings)


def expected_counts(planted: MimicPlanted, target: str = "findings") -> dict[str, int]:
    """An independent count from the planted ground truth: each image under the first check it fails."""
    defects = {name: set(ids) for name, ids in planted.defects.items()}
    no_target = defects["no_findings"] if target == "findings" else defects["no_impression"]
    if target == "both":  # either section will do, but R2Gen's annotation holds the findings only
        no_target = defects["no_findings"] if planted.form == "annotation" else set()
    counts = dict.fromkeys(
        ("rows_not_in_split_csv", "rows_without_report", "rows_missing_file", "rows_without_target",
         "rows_unknown_view", "kept"), 0)  # fmt: skip
    split_of: dict[str, str] = {}
    for study, record in planted.study_records.items():
        if planted.form == "annotation" and study in defects["no_report"]:
            continue  # R2Gen's form has no entry for a study without a report: its images are no rows at all
        split_of[study] = record["split"]
        for dicom, view in record["images"]:
            if dicom in defects["not_in_split_csv"]:
                counts["rows_not_in_split_csv"] += 1
            elif study in defects["no_report"]:
                counts["rows_without_report"] += 1
            elif dicom in defects["missing_image"]:
                counts["rows_missing_file"] += 1
            elif study in no_target:
                counts["rows_without_target"] += 1
            elif view not in KNOWN_VIEWS:
                counts["rows_unknown_view"] += 1
            else:
                counts["kept"] += 1
    counts["reports"] = len(planted.study_records) - len(defects["no_report"])
    counts["studies_without_target"] = len(no_target)
    return counts


@pytest.mark.parametrize("form", FORMS)
def test_the_readers_counts_equal_the_planted_ones(folders, form: str) -> None:
    root, planted = folders[form]
    for target in ("findings", "impression", "both") if form == "reports" else ("findings", "both"):
        parsed = reader_for("mimic-cxr").parse(root, ReadOptions(target))
        expected = expected_counts(planted, target)
        kept = expected.pop("kept")
        assert {name: parsed.counts[name] for name in expected} == expected, target
        assert len(parsed.rows) == kept
    assert parsed.counts["studies_without_report"] == (len(planted.defects["no_report"]) if form == "reports" else 0)
    # Every kept row: its study's patient, a projection from its view position, a path that exists.
    for row in parsed.rows:
        record = planted.study_records[row.uid]
        assert row.patient == record["patient"] and [row.filename.rsplit("/", 1)[1][:-4], row.view] in record["images"]
        assert row.projection == ("Lateral" if row.view in ("LATERAL", "LL") else "Frontal")
        assert (parsed.image_root / row.filename).is_file()
    views = planted.view_positions
    assert parsed.counts["view_position_ll"] <= views["LL"] and parsed.counts["view_position_none"] <= views[""]


@pytest.mark.parametrize("form", FORMS)
def test_prepare_honours_the_official_split_and_keeps_patients_apart(folders, form: str, tmp_path: Path) -> None:
    root, planted = folders[form]
    config = _config(tmp_path / "var", root, **{"data.projection": "both"})
    prepared = load_prepared(config)
    expected = expected_counts(planted)
    assert prepared.counts["images_kept"] == expected["kept"]  # 32-px JPGs all decode
    manifest = json.loads(Path(prepared.artifacts["split_manifest"]).read_text())
    assert manifest["official"] is True
    for name, uids in manifest["uids"].items():
        assert uids and {planted.study_records[uid]["split"] for uid in uids} == {name}
    patients = {uid: record["patient"] for uid, record in planted.study_records.items()}
    check_patient_disjoint(manifest["uids"], patients, "the prepared split")
    for name in ("train", "val", "test"):
        split = prepared.split(name)
        assert len(split) == len(split.images) > 0
        assert {planted.study_records[uid]["split"] for uid in split.uids} == {name}
    assert config.data.describe_split() == "MIMIC-CXR's official split (mimic-cxr-2.0.0-split.csv)"
    assert dataset_fingerprint(root, "mimic-cxr").startswith("sha256:")


def test_view_positions_and_one_image_per_study_apply_after_the_reader(folders, tmp_path: Path) -> None:
    root, _ = folders["reports"]
    config = _config(tmp_path / "var", root, **{"data.projection": "both", "data.view_positions": "[PA]",
                                                 "data.images_per_study": "one"})  # fmt: skip
    prepared = load_prepared(config)
    parsed = reader_for("mimic-cxr").parse(root, ReadOptions("findings"))
    pa = [row for row in parsed.rows if row.view == "PA"]
    assert prepared.counts["rows_other_view"] == len(parsed.rows) - len(pa)
    assert prepared.counts["images_kept"] == len({row.uid for row in pa})


def test_a_folder_without_its_split_csv_is_one_line_naming_it(folders, tmp_path: Path) -> None:
    root, _ = folders["reports"]
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "files").symlink_to(root / "files")
    shutil.copy(root / "mimic-cxr-2.0.0-metadata.csv.gz", copy)
    config = _config(tmp_path / "var", copy)
    with pytest.raises(DataLayoutError) as caught:
        load_prepared(config)
    message = str(caught.value)
    assert "\n" not in message and "mimic-cxr-2.0.0-split.csv(.gz) is missing" in message
    assert "files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg" in message
    assert not (tmp_path / "var" / "data" / "prepared").exists()  # nothing half-written


def test_a_csv_without_a_column_is_one_line_naming_it(folders, tmp_path: Path) -> None:
    root, _ = folders["reports"]
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "files").symlink_to(root / "files")
    shutil.copy(root / "mimic-cxr-2.0.0-split.csv.gz", copy)
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "rt") as handle:
        text = handle.read().replace("ViewPosition", "View", 1)
    (copy / "mimic-cxr-2.0.0-metadata.csv").write_text(text)  # not gzipped: read as well
    with pytest.raises(DataLayoutError, match=r"mimic-cxr-2\.0\.0-metadata\.csv: missing column\(s\) ViewPosition"):
        load_prepared(_config(tmp_path / "var", copy))
    assert not (tmp_path / "var" / "data" / "prepared").exists()


def test_a_broken_annotation_and_an_impression_target_are_one_line(folders, tmp_path: Path) -> None:
    root, _ = folders["annotation"]
    with pytest.raises(ConfigError, match=r"holds the findings section only: set data\.target=findings"):
        reader_for("mimic-cxr").parse(root, ReadOptions("impression"))
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True, ignore=shutil.ignore_patterns("files"))
    (copy / "files").symlink_to(root / "files")
    annotation = json.loads((copy / "annotation.json").read_text())
    del annotation["train"][0]["image_path"]
    (copy / "annotation.json").write_text(json.dumps(annotation))
    with pytest.raises(DataLayoutError, match=r"an entry of 'train' lacks 'image_path'") as caught:
        reader_for("mimic-cxr").parse(copy, ReadOptions("findings"))
    assert "\n" not in str(caught.value)


def _annotation_copy(root: Path, copy: Path) -> Path:
    """A copy of an annotation-form folder whose annotation.json may be rewritten (its files/ linked)."""
    shutil.copytree(root, copy, symlinks=True, ignore=shutil.ignore_patterns("files"))
    (copy / "files").symlink_to(root / "files")
    return copy / "annotation.json"


def test_a_study_whose_entries_are_far_apart_is_one_study(folders, tmp_path: Path, monkeypatch) -> None:
    """The annotation is read in batches of entries: a study's entries in different batches are still one
    study, with the same rows and counts as when they are adjacent."""
    root, planted = folders["annotation"]
    annotation_json = _annotation_copy(root, tmp_path / "copy")
    annotation = json.loads(annotation_json.read_text())
    random.Random(5).shuffle(annotation["train"])
    annotation_json.write_text(json.dumps(annotation))
    monkeypatch.setattr(mimic_cxr, "_BATCH", 1)  # batches of 4 entries
    shuffled = reader_for("mimic-cxr").parse(tmp_path / "copy", ReadOptions("findings"))
    monkeypatch.undo()
    adjacent = reader_for("mimic-cxr").parse(root, ReadOptions("findings"))
    expected = expected_counts(planted)
    assert len(shuffled.rows) == expected.pop("kept")
    assert {name: shuffled.counts[name] for name in expected} == expected
    assert shuffled.counts["studies"] == adjacent.counts["studies"] == len(set(adjacent.report_uids))
    rows = {(row.uid, row.filename, row.patient, row.text, row.view) for row in adjacent.rows}
    assert {(row.uid, row.filename, row.patient, row.text, row.view) for row in shuffled.rows} == rows


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"[]", r"it is not a JSON object"),
        (b'{"images": []}', r"no entry in a train, val or test list"),
        (None, r"IncompleteJSONError"),  # the real file cut off halfway
    ],
)
def test_an_annotation_that_is_not_r2gens_is_one_line_and_leaves_nothing(
    folders, tmp_path: Path, content: bytes | None, reason: str
) -> None:
    root, _ = folders["annotation"]
    annotation_json = _annotation_copy(root, tmp_path / "copy")
    whole = annotation_json.read_bytes()
    annotation_json.write_bytes(whole[: len(whole) // 2] if content is None else content)
    with pytest.raises(DataLayoutError, match=r"annotation\.json is not R2Gen's annotation JSON \(") as caught:
        load_prepared(_config(tmp_path / "var", tmp_path / "copy"))
    assert re.search(reason, str(caught.value)) and "\n" not in str(caught.value)
    assert "train/val/test lists" in str(caught.value)
    assert [path for path in (tmp_path / "var").rglob("*") if path.is_file() and "prepared" in path.parts] == []


def test_a_removed_image_and_a_report_without_findings_are_counted_not_fatal(folders, tmp_path: Path) -> None:
    root, _ = folders["reports"]
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    before = reader_for("mimic-cxr").parse(copy, ReadOptions("findings"))
    row = before.rows[0]
    (before.image_root / row.filename).unlink()
    report = copy / "files" / row.filename.rsplit("/", 2)[0] / f"{row.filename.split('/')[2]}.txt"
    other = next(r for r in before.rows if r.uid != row.uid)
    other_report = copy / "files" / other.filename.rsplit("/", 2)[0] / f"{other.filename.split('/')[2]}.txt"
    other_report.write_text(re.sub(r" FINDINGS:.*?(?= IMPRESSION:)", "", other_report.read_text(), flags=re.S))
    after = reader_for("mimic-cxr").parse(copy, ReadOptions("findings"))
    assert report.is_file()
    other_images = sum(1 for r in before.rows if r.uid == other.uid)
    assert after.counts["rows_missing_file"] == before.counts["rows_missing_file"] + 1
    assert after.counts["rows_without_target"] == before.counts["rows_without_target"] + other_images
    assert after.counts["reports_without_findings"] == before.counts["reports_without_findings"] + 1
    assert len(after.rows) == len(before.rows) - 1 - other_images


REPORT = "\n".join([
    "                                 FINAL REPORT",
    " EXAMINATION:  CHEST (PA AND LAT)", " ",
    " INDICATION:  ___ with cough", " ",
    " FINDINGS:", " ", " ",
    " FINDINGS:  Heart size is normal.  The lungs are clear.",
    " No effusion.", " ",
    " IMPRESSON:", " ",
    " 1. No acute process. 2. No pneumothorax.", "",
])  # fmt: skip


def test_sections_follow_the_mimic_cxr_section_parser() -> None:
    findings, impression = report_sections(REPORT)
    # The empty findings section is dropped, the last non-empty one is the report's; the misspelled header is
    # the impression.
    assert findings == "Heart size is normal.  The lungs are clear.\n No effusion."
    assert impression == "1. No acute process. 2. No pneumothorax."
    assert report_sections(REPORT.replace("IMPRESSON", "CONCLUSION"))[1] == impression
    views = REPORT.replace("FINDINGS:  Heart", "PA AND LATERAL VIEWS OF THE CHEST:  Heart")
    assert report_sections(views)[0].startswith("Heart size")
    assert report_sections("No sections at all.") == (None, None)


def _r2gen_mimic(report: str) -> str:
    """R2Gen's clean_report_mimic_cxr, transcribed step for step for this test (cuhksz-nlp/R2Gen,
    modules/tokenizers.py), its output's tokens joined by single spaces as R2Gen decodes them."""
    text = report.replace("\n", " ")
    for old, new, times in (("__", "_", 7), ("  ", " ", 6), ("..", ".", 8)):
        for _ in range(times):
            text = text.replace(old, new)
    text = text.replace("1. ", "")
    for old in (". 2. ", ". 3. ", ". 4. ", ". 5. ", " 2. ", " 3. ", " 4. ", " 5. "):
        text = text.replace(old, ". ")
    sentences = []
    for sentence in text.strip().lower().split(". "):
        for mark in ('"', "/", "\\", "'"):
            sentence = sentence.replace(mark, "")
        sentences.append(re.sub(r"[.,?;*!%^&_+():-\[\]{}]", "", sentence.strip().lower()))
    return " ".join((" . ".join(sentences) + " .").split())


@pytest.mark.parametrize("text", [
    "Heart size is normal.  The lungs are clear.\n No effusion.",
    "1. No acute process. 2. Small ___ effusion.... 3. Stable.",
    "PA and lateral views.\n\n  Mild   cardiomegaly (stable); no edema__ seen...",
])  # fmt: skip
def test_r2gen_protocol_text_is_r2gens_mimic_cleaning(text: str) -> None:
    assert clean_target(r2gen_mimic_prepare(text), "r2gen") == _r2gen_mimic(text)


def test_the_presets_read_a_mimic_folder_named_with_data_dir() -> None:
    base = load_config("mimic-cxr", {"data.data_dir": "/data/mimic-cxr-jpg"})
    r2gen = load_config("mimic-cxr-r2gen", {"data.data_dir": "/data/mimic-cxr-jpg"})
    assert base.data.source == r2gen.data.source == "mimic-cxr"  # --data-dir alone keeps the preset's layout
    assert (base.data.target, base.eval.protocol, base.data.view_positions) == ("findings", "native", ["PA", "AP"])
    assert (r2gen.data.target, r2gen.eval.protocol, r2gen.data.projection) == ("findings", "r2gen", "both")
    assert base.model == load_config("iu-xray").model and base.data.official_split and r2gen.data.official_split
    assert r2gen.data.view_positions is None


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_train_and_evaluate_on_the_smoke_models(folders, form: str, tmp_path: Path) -> None:
    from worker.generation.evaluate import evaluate
    from worker.generation.stage import train_full
    from worker.recorder import MemoryRecorder
    from worker.siglip.stage import train_siglip

    root, planted = folders[form]
    overrides = {
        "train.epochs": "1",
        "train.limit_train_batches": "2",
        "generation.epochs": "1",
        "data.projection": "both",
    }
    if form == "annotation":
        overrides["eval.protocol"] = "r2gen"
    config = _config(tmp_path / "var", root, **overrides)
    siglip = train_siglip(config, MemoryRecorder())
    generator = train_full(config, MemoryRecorder(), siglip_checkpoint=siglip.metrics["best_checkpoint"])
    result = evaluate(config, MemoryRecorder(), checkpoint=generator.metrics["best_checkpoint"])
    assert result.status == "succeeded"
    scored = {json.loads(line)["uid"] for line in Path(result.artifacts["predictions"]).read_text().splitlines()}
    assert scored and {planted.study_records[uid]["split"] for uid in scored} == {"test"}
    assert result.metrics["train_overlap"] == 0 and 0 <= result.metrics["bleu4"] <= 1
