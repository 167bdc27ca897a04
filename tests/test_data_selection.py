"""Choosing views and images per study, and splitting by patient: the same for every dataset layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import ConfigError, DataConfig
from worker.data.readers import ImageRow, ParsedDataset
from worker.data.selection import select_images
from worker.data.splits import assign_splits_by_patient, check_patient_disjoint


def select_rows(rows: list[ImageRow], data: DataConfig) -> tuple[list[ImageRow], dict[str, int]]:
    """``select_images`` on the columns of these rows, the kept ones as rows."""
    kept, counts = select_images(ParsedDataset.from_rows(rows, [], Path(".")).images, data)
    return [rows[i] for i in kept.tolist()], counts


def _row(uid: str, name: str, projection: str, view: str = "", patient: str = "") -> ImageRow:
    return ImageRow(uid, name, projection, "text", patient=patient, view=view)


ROWS = [
    _row("s1", "a.jpg", "Lateral", "LATERAL"),
    _row("s1", "b.jpg", "Frontal", "AP"),
    _row("s1", "c.jpg", "Frontal", "PA"),
    _row("s2", "d.jpg", "Lateral", "LL"),
    _row("s3", "e.jpg", "Frontal", "AP"),
    _row("s3", "f.jpg", "Frontal", "AP"),
]


def test_view_positions_and_one_image_per_study_are_counted() -> None:
    kept, counts = select_rows(ROWS, DataConfig(projection="both", view_positions=["pa", "ap"]))
    assert [r.filename for r in kept] == ["b.jpg", "c.jpg", "e.jpg", "f.jpg"]
    assert counts == {"rows_other_projection": 0, "rows_other_view": 2, "rows_beyond_one_per_study": 0}
    kept, counts = select_rows(ROWS, DataConfig(projection="both", images_per_study="one"))
    # Frontal before lateral, PA before AP, then the dataset's order; a lateral-only study keeps its lateral.
    assert [r.filename for r in kept] == ["c.jpg", "d.jpg", "e.jpg"]
    assert counts["rows_beyond_one_per_study"] == 3
    kept, counts = select_rows(ROWS, DataConfig(projection="Frontal", images_per_study="one"))
    assert [r.filename for r in kept] == ["c.jpg", "e.jpg"]
    assert (counts["rows_other_projection"], counts["rows_beyond_one_per_study"]) == (2, 2)


def test_view_positions_on_a_dataset_without_them_is_one_line() -> None:
    rows = [_row("1", "1.png", "Frontal")]
    with pytest.raises(ConfigError, match=r"records no view positions: choose views with data\.projection"):
        select_rows(rows, DataConfig(view_positions=["PA"]))


def test_split_by_patient_keeps_each_patient_on_one_side() -> None:
    patients = {f"s{i}": f"p{i // 3}" for i in range(300)}  # 100 patients with 3 studies each
    patients["lone"] = ""  # no patient id: a patient of its own
    splits = assign_splits_by_patient(list(patients), patients, seed=5, fractions=(0.7, 0.1, 0.2))
    side = {patient: name for name, uids in splits.items() for uid in uids if (patient := patients[uid])}
    for name, uids in splits.items():
        assert all(side[patients[uid]] == name for uid in uids if patients[uid])
    assert sorted(uid for uids in splits.values() for uid in uids) == sorted(patients)
    # Sizes within one patient's studies of the fractions.
    assert abs(len(splits["train"]) - 0.7 * 301) <= 3 and abs(len(splits["val"]) - 0.1 * 301) <= 3
    assert splits == assign_splits_by_patient(list(patients), patients, seed=5, fractions=(0.7, 0.1, 0.2))
    assert splits != assign_splits_by_patient(list(patients), patients, seed=6, fractions=(0.7, 0.1, 0.2))


def test_a_split_that_crosses_patients_is_refused_in_one_line() -> None:
    patients = {"s1": "p1", "s2": "p1", "s3": "p2"}
    check_patient_disjoint({"train": ["s1", "s3"], "val": [], "test": ["s2"]}, {"s3": "p2"}, "x")  # p1 unknown
    with pytest.raises(ConfigError, match=r"of 1 patient\(s\) in more than one split \(e\.g\. patient p1 in test and"):
        check_patient_disjoint({"train": ["s1", "s3"], "val": [], "test": ["s2"]}, patients, "the split file")
