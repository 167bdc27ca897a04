"""Studies of a split: report generation writes one impression per study, from one image of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worker.data.rows import RowView, pick_rows


class StudySplit(Protocol):
    """What is read from a split (worker.data.SplitData satisfies it): one row per kept image."""

    uids: list[str]
    projections: list[str]
    texts: list[str]
    images: np.ndarray


@dataclass(frozen=True)
class Studies:
    study_ids: list[str]
    """Each study's id (IU-Xray's ``uid``)."""
    texts: list[str]
    rows: list[int]
    """The split row whose image stands for each study: its first frontal view, else its first image."""

    def __len__(self) -> int:
        return len(self.study_ids)

    def images(self, split: StudySplit) -> np.ndarray | RowView:
        """uint8 [N, S, S]: one image per study, in study order; a view of the split's rows, read on access
        (a batch at a time by the encoders), not a copy of them."""
        return pick_rows(split.images, self.rows)


def select_studies(split: StudySplit) -> Studies:
    """One entry per study, in the split's order."""
    chosen: dict[str, int] = {}
    for row, (study_id, projection) in enumerate(zip(split.uids, split.projections, strict=True)):
        current = chosen.get(study_id)
        if current is None or (projection == "Frontal" and split.projections[current] != "Frontal"):
            chosen[study_id] = row
    rows = list(chosen.values())
    return Studies(study_ids=list(chosen), texts=[split.texts[r] for r in rows], rows=rows)
