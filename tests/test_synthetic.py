"""The synthetic IU-Xray generator: Kaggle layout, determinism, planted quirks, a learnable signal."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.config import RunConfig, load_config
from worker.data import PreparedData, load_prepared
from worker.data.layout import PROJECTION_COLUMNS, REPORT_COLUMNS
from worker.data.synthetic import PLANTED_JSON, ensure_synthetic_dataset, generate_synthetic_dataset

FILENAME = re.compile(r"^\d+_IM-\d{4}-\d{4}\.dcm\.png$")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "a"
    generate_synthetic_dataset(root, num_studies=20, seed=3)
    return root


def _images(root: Path) -> Path:
    return root / "images" / "images_normalized"


def test_kaggle_layout_and_column_names(small: Path) -> None:
    raw = (small / "indiana_reports.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfuid,MeSH,") and b"\r\n" in raw
    with (small / "indiana_reports.csv").open(encoding="utf-8-sig", newline="") as handle:
        assert tuple(next(csv.reader(handle))) == REPORT_COLUMNS
    with (small / "indiana_projections.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == PROJECTION_COLUMNS
    assert {row[2] for row in rows[1:]} == {"Frontal", "Lateral"}
    names = sorted(p.name for p in _images(small).iterdir())
    assert names and all(FILENAME.match(name) for name in names)


def test_images_vary_in_size_and_carry_the_planted_formats(small: Path) -> None:
    planted = ensure_synthetic_dataset(small, 20, 3)  # reads planted.json, does not regenerate
    sizes = set()
    for path in _images(small).iterdir():
        if path.name in planted.corrupt_pngs:
            continue
        with Image.open(path) as img:
            sizes.add(img.size)
            expected = "I;16" if path.name in planted.sixteen_bit else "RGB" if path.name in planted.rgb else "L"
            assert img.mode == expected, path.name
            assert all(96 <= side <= 160 for side in img.size)
    assert len(sizes) > 10
    assert planted.sixteen_bit and planted.rgb and len(planted.corrupt_pngs) == 2
    assert not any((_images(small) / name).exists() for name in planted.missing_files)


def test_same_seed_same_bytes_other_seed_other_data(small: Path, tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path / "same", num_studies=20, seed=3)
    generate_synthetic_dataset(tmp_path / "other", num_studies=20, seed=4)
    for name in ("indiana_reports.csv", "indiana_projections.csv", PLANTED_JSON):
        assert (tmp_path / "same" / name).read_bytes() == (small / name).read_bytes()
    for path in sorted(_images(small).iterdir())[:10]:
        assert (_images(tmp_path / "same") / path.name).read_bytes() == path.read_bytes()
    assert (tmp_path / "other" / "indiana_reports.csv").read_bytes() != (small / "indiana_reports.csv").read_bytes()


def test_too_few_studies_for_every_quirk_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_synthetic_dataset(tmp_path / "tiny", num_studies=12, seed=0)


def test_smoke_counts_match_what_was_planted(smoke_prepared: PreparedData, smoke_config: RunConfig) -> None:
    planted = smoke_prepared.planted
    assert planted is not None
    expected = planted.expected_counts(smoke_config.data.projection, smoke_config.data.target)
    assert {k: smoke_prepared.counts[k] for k in expected} == expected
    # Every quirk actually occurs, so the equality above exercises each skip path.
    for name in ("studies_without_target", "rows_missing_file", "pngs_not_in_csv", "images_undecodable",
                 "images_16bit_converted", "images_rgb_converted", "studies_frontal_only", "studies_lateral_only",
                 "reports_with_xxxx", "impressions_numbered", "csv_with_bom", "csv_with_crlf"):  # fmt: skip
        assert expected[name] > 0, name


@pytest.mark.parametrize(("projection", "target"), [("both", "findings"), ("Lateral", "impression")])
def test_counts_match_for_other_filters_and_targets(smoke_config: RunConfig, projection: str, target: str) -> None:
    config = load_config(
        "smoke",
        {"paths.var_dir": smoke_config.paths.var_dir, "data.projection": projection, "data.target": target},
    )
    prepared = load_prepared(config)
    expected = prepared.planted.expected_counts(projection, target)
    assert {k: prepared.counts[k] for k in expected} == expected


def test_texts_describe_the_drawn_conditions(smoke_prepared: PreparedData) -> None:
    conditions = smoke_prepared.planted.conditions
    train = smoke_prepared.split("train")
    normal_texts = Counter(t for uid, t in zip(train.uids, train.texts, strict=True) if not conditions[uid])
    assert normal_texts.most_common(1)[0][0] == "no acute cardiopulmonary abnormality."
    assert len(normal_texts) <= 4  # repeated verbatim, as in IU-Xray
    words = {"cardiomegaly": "cardiomegaly", "effusion_left": "left pleural effusion",
             "effusion_right": "right pleural effusion", "pneumothorax": "pneumothorax",
             "consolidation": "consolidation", "nodule": "nodule"}  # fmt: skip
    for uid, text in zip(train.uids, train.texts, strict=True):
        for condition in conditions[uid]:
            assert words[condition] in text, (condition, text)


def test_images_carry_a_learnable_signal(smoke_prepared: PreparedData) -> None:
    """A nearest-centroid classifier on raw 64x64 pixels already separates single conditions well."""
    conditions = smoke_prepared.planted.conditions

    def labelled(split: str) -> tuple[np.ndarray, list[str]]:
        data = smoke_prepared.split(split)
        rows = [i for i, uid in enumerate(data.uids) if len(conditions[uid]) <= 1]
        labels = [(conditions[data.uids[i]] or ["normal"])[0] for i in rows]
        return np.asarray(data.images[rows], np.float32).reshape(len(rows), -1) / 255, labels

    x_train, y_train = labelled("train")
    x_test, y_test = labelled("test")
    names = sorted(set(y_train))
    centroids = np.stack([x_train[[y == name for y in y_train]].mean(0) for name in names])
    predicted = [names[i] for i in ((x_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    accuracy = np.mean([p == y for p, y in zip(predicted, y_test, strict=True)])
    assert accuracy > 0.6  # always answering "normal" scores about 0.5
