"""Which of a dataset's usable images a run keeps: projection, view positions, one image per study or all.

The same for every layout, after its reader: each dropped row is counted under the first setting it fails
(``rows_other_projection``, ``rows_other_view``, ``rows_beyond_one_per_study``). Works on the image table's
columns (a few arrays at MIMIC-CXR size, no object per image).
"""

from __future__ import annotations

import numpy as np

from worker.config import ConfigError, DataConfig
from worker.data.layout import PROJECTIONS
from worker.data.readers.base import PROJECTION_CODES, ImageTable

# With one image per study: frontal before lateral, and among frontal films PA (the standard erect view)
# before AP (portable, often supine, lower quality), then the dataset's order.
_VIEW_RANK = {"PA": 0, "AP": 1}


def select_images(images: ImageTable, data: DataConfig) -> tuple[np.ndarray, dict[str, int]]:
    """The rows of ``images`` that ``data`` keeps (indices, in the dataset's order) and the counts of the ones
    it drops."""
    wanted = set(PROJECTIONS) if data.projection == "both" else {data.projection}
    views = set(data.view_positions or ())
    view_values = list(images.view.values())
    if views and len(images) and not any(view_values):
        raise ConfigError(
            f"data.view_positions={sorted(views)} but this dataset (source={data.source}) records no view "
            "positions: choose views with data.projection (Frontal, Lateral, both) instead"
        )
    view_codes = images.view.row_codes()
    projection_ok = np.isin(images.projection, [PROJECTION_CODES.index(p) for p in wanted])
    view_ok = np.ones(len(images), dtype=bool)
    if views:
        view_ok = np.isin(view_codes, [code for code, value in enumerate(view_values) if value in views])
    counts = {
        "rows_other_projection": int((~projection_ok).sum()),
        "rows_other_view": int((projection_ok & ~view_ok).sum()),
        "rows_beyond_one_per_study": 0,
    }
    kept = np.flatnonzero(projection_ok & view_ok).astype(np.int32)  # half the bytes of an index an image
    if data.images_per_study == "one" and len(kept):
        rank = np.array([_VIEW_RANK.get(value, 2) for value in view_values] or [2], dtype=np.int8)
        study, order = images.study[kept], np.arange(len(kept))
        # Sorted by study, then preference (projection, view rank), then the dataset's order: the first row of
        # each study is the one kept.
        ranked = np.lexsort((order, rank[view_codes[kept]], images.projection[kept], study))
        first = np.ones(len(ranked), dtype=bool)
        first[1:] = study[ranked][1:] != study[ranked][:-1]
        chosen = np.sort(ranked[first])
        counts["rows_beyond_one_per_study"] = len(kept) - len(chosen)
        kept = kept[chosen]
    return kept, counts
