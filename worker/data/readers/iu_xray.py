"""The Kaggle IU-Xray layout: read the two CSVs, join them with the PNG folder, count every quirk on the way.

A projection row becomes an image row only if its study has a report, its PNG exists and its report has
the target section; each row is counted under the first check it fails (``rows_unknown_uid``,
``rows_missing_file``, ``rows_without_target``). Which views are kept is decided later
(worker.data.selection), whether the PNG decodes by the image cache. IU-Xray has no patient ids and no
split of its own: its studies are split by uid.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

from worker.data.cleaning import has_list_numbering, has_xxxx
from worker.data.layout import IMAGES_DIR, PROJECTION_COLUMNS, PROJECTIONS_CSV, REPORT_COLUMNS, REPORTS_CSV
from worker.data.readers.base import DataLayoutError, DatasetReader, ImageRow, ParsedDataset, ReadOptions, target_text


def images_dir(root: Path) -> Path:
    return root.joinpath(*IMAGES_DIR)


def check_layout(root: Path) -> None:
    """Raise DataLayoutError unless `root` holds both CSVs and the PNG folder."""
    for name in (REPORTS_CSV, PROJECTIONS_CSV):
        if not (root / name).is_file():
            raise DataLayoutError(
                f"{root} is not an IU-Xray folder: {name} is missing (expected the Kaggle layout: "
                f"{REPORTS_CSV}, {PROJECTIONS_CSV}, {'/'.join(IMAGES_DIR)}/)"
            )
    if not images_dir(root).is_dir():
        raise DataLayoutError(f"{root} is not an IU-Xray folder: {'/'.join(IMAGES_DIR)}/ is missing")


def _read_csv(path: Path, required: tuple[str, ...], counts: dict[str, int]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts; tolerates a byte-order mark and CRLF line endings, and counts both."""
    with path.open("rb") as raw:
        head = raw.read(4096)
    counts["csv_with_bom"] += head.startswith(b"\xef\xbb\xbf")
    counts["csv_with_crlf"] += b"\r\n" in head
    # utf-8-sig drops the BOM, which would otherwise glue itself to the first column name;
    # newline="" lets the csv module handle CRLF and newlines inside quoted fields.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in required if name not in header]
        if missing:
            raise DataLayoutError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}")
        reader.fieldnames = header
        return [{key: (value or "").strip() for key, value in row.items() if key} for row in reader]


def parse_dataset(root: Path, options: ReadOptions) -> ParsedDataset:
    """Join reports, projections and PNG files; keep rows whose study has target text, cleaned as the
    eval protocol says (worker.data.readers.base.target_text)."""
    check_layout(root)
    counts: dict[str, int] = defaultdict(int)
    reports = _read_csv(root / REPORTS_CSV, REPORT_COLUMNS, counts)
    projection_rows = _read_csv(root / PROJECTIONS_CSV, PROJECTION_COLUMNS, counts)
    pngs = {name for name in os.listdir(images_dir(root)) if name.lower().endswith(".png")}

    texts: dict[str, str] = {}
    for report in reports:
        counts["reports_with_xxxx"] += has_xxxx(report["findings"]) or has_xxxx(report["impression"])
        counts["impressions_numbered"] += has_list_numbering(report["impression"])
        texts.setdefault(report["uid"], target_text(report["findings"], report["impression"], options))
    counts["reports"] = len(reports)
    counts["studies_without_target"] = sum(1 for text in texts.values() if not text)

    views: dict[str, set[str]] = defaultdict(set)
    filenames: dict[str, list[str]] = defaultdict(list)
    rows: list[ImageRow] = []
    for row in projection_rows:
        uid, filename, projection = row["uid"], row["filename"], row["projection"]
        if uid not in texts:
            counts["rows_unknown_uid"] += 1
            continue
        views[uid].add(projection)
        filenames[uid].append(filename)
        if filename not in pngs:
            counts["rows_missing_file"] += 1
        elif not texts[uid]:
            counts["rows_without_target"] += 1
        else:
            rows.append(ImageRow(uid, filename, projection, texts[uid]))
    counts["projection_rows"] = len(projection_rows)
    counts["png_files"] = len(pngs)
    counts["pngs_not_in_csv"] = len(pngs - {row["filename"] for row in projection_rows})
    counts["studies_without_images"] = sum(1 for uid in texts if uid not in views)
    counts["studies_frontal_only"] = sum(1 for v in views.values() if v == {"Frontal"})
    counts["studies_lateral_only"] = sum(1 for v in views.values() if v == {"Lateral"})
    for name in ("rows_unknown_uid", "rows_missing_file", "rows_without_target"):
        counts.setdefault(name, 0)
    return ParsedDataset.from_rows(
        rows=rows, report_uids=list(texts), image_root=images_dir(root), filenames=dict(filenames),
        counts=dict(counts),
    )  # fmt: skip


IU_XRAY = DatasetReader(
    layout=f"the Kaggle IU-Xray layout: {REPORTS_CSV}, {PROJECTIONS_CSV}, {'/'.join(IMAGES_DIR)}/",
    check_layout=check_layout,
    parse=parse_dataset,
    identity_files=lambda root: [root / REPORTS_CSV, root / PROJECTIONS_CSV],
)
