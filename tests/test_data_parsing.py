"""Parsing the Kaggle CSVs: every quirk is counted and skipped, never a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.config import DataConfig
from worker.data.layout import PROJECTIONS_CSV, REPORTS_CSV
from worker.data.readers import DataLayoutError, ParsedDataset, ReadOptions, reader_for
from worker.data.selection import select_images

HEADER = "uid,MeSH,Problems,image,indication,comparison,findings,impression"


def _write_dataset(root: Path, reports: list[str], projections: list[str], pngs: list[str], *, bom: bool, crlf: bool):
    newline = "\r\n" if crlf else "\n"
    (root / REPORTS_CSV).write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join([HEADER, *reports, ""]).encode())
    (root / PROJECTIONS_CSV).write_text("\n".join(["uid,filename,projection", *projections, ""]))
    images = root / "images" / "images_normalized"
    images.mkdir(parents=True)
    for name in pngs:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / name)


def parse_dataset(root: Path, target: str, projections: set[str], protocol: str = "native") -> ParsedDataset:
    """The IU-Xray reader followed by the projection filter, as the data stage runs them."""
    parsed = reader_for("local").parse(root, ReadOptions(target, protocol))
    projection = "both" if len(projections) == 2 else next(iter(projections))
    kept, selected = select_images(parsed.images, DataConfig(projection=projection))
    parsed.images = parsed.images.take(kept)
    parsed.counts |= selected
    return parsed


@pytest.fixture
def quirky(tmp_path: Path) -> Path:
    reports = [
        '1,normal,normal,Xray,pain,None.,"The lungs are clear.","1. No acute disease. 2. Stable XXXX."',
        "2,normal,normal,Xray,pain,None.,,No active disease.",  # no findings
        "3,normal,normal,Xray,pain,None.,Heart XXXX normal.,",  # no impression
        '4,normal,normal,Xray,pain,None.,"Clear,\nno effusion.",Normal chest x-XXXX.',  # newline inside quotes
        "5,normal,normal,Xray,pain,None.,Clear.,Normal.",  # no projection rows
    ]
    projections = [
        "1,1_IM-0001-1001.dcm.png,Frontal",
        "1,1_IM-0001-2001.dcm.png,Lateral",
        "2,2_IM-0002-1001.dcm.png,Frontal",  # frontal-only
        "3,3_IM-0003-1001.dcm.png,Frontal",
        "3,3_IM-0003-2001.dcm.png,Lateral",
        "4,4_IM-0004-2001.dcm.png,Lateral",  # lateral-only
        "4,4_IM-0004-3001.dcm.png,Lateral",  # file missing
        "9,9_IM-0009-1001.dcm.png,Frontal",  # no report with this uid
    ]
    pngs = [
        "1_IM-0001-1001.dcm.png", "1_IM-0001-2001.dcm.png", "2_IM-0002-1001.dcm.png", "3_IM-0003-1001.dcm.png",
        "3_IM-0003-2001.dcm.png", "4_IM-0004-2001.dcm.png", "9_IM-0009-1001.dcm.png",
        "7_IM-0007-1001.dcm.png",  # not in the CSV
    ]  # fmt: skip
    _write_dataset(tmp_path, reports, projections, pngs, bom=True, crlf=True)
    return tmp_path


def test_every_quirk_is_counted(quirky: Path) -> None:
    parsed = parse_dataset(quirky, "impression", {"Frontal", "Lateral"})
    assert parsed.report_uids == ["1", "2", "3", "4", "5"]  # the BOM did not eat the first column name
    c = parsed.counts
    assert (c["csv_with_bom"], c["csv_with_crlf"]) == (1, 1)
    assert (c["reports"], c["projection_rows"], c["png_files"]) == (5, 8, 8)
    assert c["studies_without_target"] == 1
    assert c["rows_unknown_uid"] == 1
    assert c["rows_missing_file"] == 1
    assert c["rows_without_target"] == 2
    assert c["rows_other_projection"] == 0
    assert c["pngs_not_in_csv"] == 1
    assert c["studies_without_images"] == 1
    assert (c["studies_frontal_only"], c["studies_lateral_only"]) == (1, 1)
    assert c["reports_with_xxxx"] == 3
    assert c["impressions_numbered"] == 1
    assert [(r.uid, r.projection) for r in parsed.rows] == [("1", "Frontal"), ("1", "Lateral"), ("2", "Frontal"),
                                                            ("4", "Lateral")]  # fmt: skip
    assert parsed.rows[0].text == "no acute disease. stable."
    assert parsed.rows[3].text == "normal chest x."


def test_findings_target_and_projection_filter(quirky: Path) -> None:
    parsed = parse_dataset(quirky, "findings", {"Frontal"})
    assert parsed.counts["studies_without_target"] == 1  # study 2 has no findings
    assert parsed.counts["rows_without_target"] == 1
    assert parsed.counts["rows_other_projection"] == 3
    assert [(r.uid, r.text) for r in parsed.rows] == [("1", "the lungs are clear."), ("3", "heart normal.")]
    assert all(r.projection == "Frontal" for r in parsed.rows)


def test_r2gen_protocol_cleans_the_target_as_r2gen_does(quirky: Path) -> None:
    native = parse_dataset(quirky, "findings", {"Frontal"})
    parsed = parse_dataset(quirky, "findings", {"Frontal"}, protocol="r2gen")
    # R2Gen keeps the de-identification token and splits sentences with " . ".
    assert [(r.uid, r.text) for r in parsed.rows] == [("1", "the lungs are clear ."), ("3", "heart xxxx normal .")]
    # The same studies and rows are kept or skipped: only the text differs.
    assert parsed.counts == native.counts
    assert parsed.filenames["1"] == ["1_IM-0001-1001.dcm.png", "1_IM-0001-2001.dcm.png"]


def test_plain_utf8_lf_csv_reads_the_same(tmp_path: Path) -> None:
    _write_dataset(tmp_path, ["1,n,n,X,i,c,Clear.,Normal."], ["1,1_a.png,Frontal"], ["1_a.png"], bom=False, crlf=False)
    parsed = parse_dataset(tmp_path, "impression", {"Frontal"})
    assert (parsed.counts["csv_with_bom"], parsed.counts["csv_with_crlf"]) == (0, 0)
    assert [r.text for r in parsed.rows] == ["normal."]


def test_missing_layout_and_columns_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match=REPORTS_CSV):
        parse_dataset(tmp_path, "impression", {"Frontal"})
    _write_dataset(tmp_path, ["1,n,n,X,i,c,Clear.,Normal."], ["1,1_a.png,Frontal"], ["1_a.png"], bom=False, crlf=False)
    (tmp_path / PROJECTIONS_CSV).write_text("uid,file,view\n1,1_a.png,Frontal\n")
    with pytest.raises(DataLayoutError, match="missing column\\(s\\) filename, projection") as info:
        parse_dataset(tmp_path, "impression", {"Frontal"})
    assert "\n" not in str(info.value)


def test_both_sections_join_findings_then_impression(quirky: Path) -> None:
    parsed = parse_dataset(quirky, "both", {"Frontal", "Lateral"})
    texts = {r.uid: r.text for r in parsed.rows}
    assert texts["1"] == "the lungs are clear. no acute disease. stable."
    assert texts["2"] == "no active disease."  # impression only
    assert texts["3"] == "heart normal."  # findings only
    assert parsed.counts["studies_without_target"] == 0
