"""Studies of a split: report generation writes one impression per study, from one image of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class StudySplit(Protocol):
    """What is read from a split (worker.data.SplitData satisfies it): one row per kept image."""

    uids: list[str]
    projections: list[str]
    texts: list[str]
    images: np.ndarray


@dataclass(frozen=True)
class Studies:
    uids: list[str]
    texts: list[str]
    rows: list[int]
    """The split row whose image stands for each study: its first frontal view, else its first image."""

    def __len__(self) -> int:
        return len(self.uids)

    def images(self, split: StudySplit) -> np.ndarray:
        """uint8 [N, S, S]: one image per study, in study order."""
        return np.asarray(split.images[self.rows])


def select_studies(split: StudySplit) -> Studies:
    """One entry per uid, in the split's order."""
    chosen: dict[str, int] = {}
    for row, (uid, projection) in enumerate(zip(split.uids, split.projections, strict=True)):
        current = chosen.get(uid)
        if current is None or (projection == "Frontal" and split.projections[current] != "Frontal"):
            chosen[uid] = row
    rows = list(chosen.values())
    return Studies(uids=list(chosen), texts=[split.texts[r] for r in rows], rows=rows)
