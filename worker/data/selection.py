"""Which of a dataset's usable images a run keeps: projection, view positions, one image per study or all.

The same for every layout, after its reader: each dropped row is counted under the first setting it fails
(``rows_other_projection``, ``rows_other_view``, ``rows_beyond_one_per_study``).
"""

from __future__ import annotations

from worker.config import ConfigError, DataConfig
from worker.data.layout import PROJECTIONS
from worker.data.readers.base import ImageRow

# With one image per study: frontal before lateral, and among frontal films PA (the standard erect view)
# before AP (portable, often supine, lower quality), then the dataset's order.
_VIEW_RANK = {"PA": 0, "AP": 1}


def _preference(row: ImageRow) -> tuple[int, int]:
    return (0 if row.projection == "Frontal" else 1, _VIEW_RANK.get(row.view, 2))


def select_rows(rows: list[ImageRow], data: DataConfig) -> tuple[list[ImageRow], dict[str, int]]:
    """The rows ``data`` keeps, in the dataset's order, and the counts of the ones it drops."""
    projections = set(PROJECTIONS) if data.projection == "both" else {data.projection}
    views = set(data.view_positions or ())
    if views and rows and not any(row.view for row in rows):
        raise ConfigError(
            f"data.view_positions={sorted(views)} but this dataset (source={data.source}) records no view "
            "positions: choose views with data.projection (Frontal, Lateral, both) instead"
        )
    counts = {"rows_other_projection": 0, "rows_other_view": 0, "rows_beyond_one_per_study": 0}
    kept: list[ImageRow] = []
    for row in rows:
        if row.projection not in projections:
            counts["rows_other_projection"] += 1
        elif views and row.view not in views:
            counts["rows_other_view"] += 1
        else:
            kept.append(row)
    if data.images_per_study == "one":
        best: dict[str, int] = {}
        for index, row in enumerate(kept):
            current = best.get(row.uid)
            if current is None or _preference(row) < _preference(kept[current]):
                best[row.uid] = index
        chosen = set(best.values())
        counts["rows_beyond_one_per_study"] = len(kept) - len(chosen)
        kept = [row for index, row in enumerate(kept) if index in chosen]
    return kept, counts

