"""The data a checkpoint was trained on, recorded in it, and the data an evaluation of it scores.

A training checkpoint records its data settings (source, location, split seed, fractions, split file,
projection, target), the identity of the dataset folder (its path and a hash of its two CSVs) and the uids of
every study it trained on. Whatever later reads the checkpoint against a dataset (evaluate, qualitative,
predict's similar reports, the nearest-neighbour baselines) takes the data from there, so the caller chooses
only which split to score and can never score the model's own training studies by passing another seed.

Scoring other data happens only when the caller names another dataset folder (``--data-dir``): it is split
with the checkpoint's settings, and its studies that the checkpoint trained on are left out and counted.
Torch-free: the checkpoint is read with the inert header reader of ``worker.checkpoint_info``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.checkpoint_info import RUN_CONFIG_KEY, read_header
from worker.config import (
    DATA_IDENTITY_FIELDS,
    DATA_READING_FIELDS,
    DEFAULT_SPLIT_SEED,
    IU_XRAY_SOURCES,
    ConfigError,
    DataConfig,
    RunConfig,
)
from worker.data.readers import reader_for

logger = logging.getLogger(__name__)

DATA_IDENTITY_KEY = "data_identity"


def dataset_fingerprint(root: str | Path, source: str = "local") -> str:
    """sha256 of the files that hold the dataset's studies and texts (its reader's ``identity_files``): the
    same for every copy of the dataset, wherever it lies."""
    digest = hashlib.sha256()
    root = Path(root)
    for path in reader_for(source).identity_files(root):
        name = path.relative_to(root) if path != root else Path(path.name)
        digest.update(str(name).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def _same_layout_files(folder: Path, source: str) -> bool:
    """Whether ``folder`` holds the identity files ``source``'s reader expects (so it can be fingerprinted)."""
    try:
        return all(path.is_file() for path in reader_for(source).identity_files(folder))
    except ConfigError:
        return False


def data_identity(config: RunConfig, root: str | Path, train_uids: Iterable[str]) -> dict[str, Any]:
    """What a checkpoint records about its data: plain JSON types only, so a weights-only load reads it."""
    return {
        "data": config.data.model_dump(mode="json", include=set(DATA_IDENTITY_FIELDS)),
        "root": str(root),
        "fingerprint": dataset_fingerprint(root, config.data.source),
        "train_uids": sorted(set(train_uids)),
    }


@dataclass(frozen=True)
class TrainedData:
    """The data a checkpoint records (or, for a checkpoint from before the record, what its run config implies)."""

    data: dict[str, Any]
    """DataConfig fields, the split seed included."""
    root: str | None
    fingerprint: str | None
    train_uids: frozenset[str] | None
    """None for a checkpoint without a record: the training split is then drawn again from ``data``."""


def trained_data(header: dict[str, Any]) -> TrainedData:
    """The data of a checkpoint's header (``worker.checkpoint_info.read_header`` or a weights-only load)."""
    identity = header.get(DATA_IDENTITY_KEY)
    if isinstance(identity, dict):
        return TrainedData(
            dict(identity["data"]), identity.get("root"), identity.get("fingerprint"),
            frozenset(identity["train_uids"]),
        )  # fmt: skip
    run = header.get(RUN_CONFIG_KEY) or {}
    data = dict(run.get("data") or {})
    # Before the split had a seed of its own it was drawn with the run's seed.
    data.setdefault("split_seed", run.get("seed", DEFAULT_SPLIT_SEED))
    return TrainedData({k: v for k, v in data.items() if k in DATA_IDENTITY_FIELDS}, None, None, None)


def with_data(config: RunConfig, data: dict[str, Any], source: str | None = None) -> RunConfig:
    """``config`` reading ``data`` (the caller's reading settings kept); with ``source`` (what ``data`` is
    from), a setting of the caller's that this replaces is logged."""
    reading = config.data.model_dump(include=set(DATA_READING_FIELDS))
    replaced = DataConfig.model_validate({**data, **reading})
    if source:
        changed = [
            f"data.{name}={getattr(replaced, name)!r} (not {getattr(config.data, name)!r})"
            for name in DATA_IDENTITY_FIELDS
            if getattr(replaced, name) != getattr(config.data, name)
        ]
        if changed:
            logger.warning("using the data of %s: %s", source, ", ".join(changed))
    return config.model_copy(update={"data": replaced})


@dataclass(frozen=True)
class ScoringPlan:
    """Which data an evaluation of a checkpoint reads."""

    trained: RunConfig
    """The caller's config on the checkpoint's own data: its training split is what the model saw."""
    scored: RunConfig
    """The data whose split is scored: the checkpoint's, or another dataset the caller named."""
    other_dataset: bool
    train_uids: frozenset[str] | None

    def training_uids(self) -> frozenset[str]:
        """The studies the checkpoint trained on (drawn again for a checkpoint without a record)."""
        if self.train_uids is not None:
            return self.train_uids
        from worker.data.prepared import load_prepared

        return frozenset(load_prepared(self.trained).split("train").uids)


def scoring_plan(config: RunConfig, checkpoint: str | Path) -> ScoringPlan:
    """The data an evaluation of ``checkpoint`` reads: the checkpoint's own, unless ``config.data.data_dir``
    names a dataset folder that is neither the checkpoint's nor a copy of it (same CSVs)."""
    trained = trained_data(read_header(checkpoint))
    if config.eval.protocol == "r2gen" and trained.data.get("target") != "findings":
        raise ConfigError(
            f"eval.protocol=r2gen scores the findings section, but checkpoint {checkpoint} was trained on the "
            f"{trained.data.get('target')}: score it with eval.protocol=native, or train with data.target=findings"
        )
    own = with_data(config, trained.data)
    if not _names_other_dataset(config, own, trained):
        return ScoringPlan(own, own, False, trained.train_uids)
    # The other dataset is read in the checkpoint's layout: an IU-Xray checkpoint scores a local IU-Xray copy.
    layout = trained.data.get("source", "local")
    source = "local" if layout in IU_XRAY_SOURCES else layout
    other = {**trained.data, "source": source, "data_dir": config.data.data_dir}
    logger.info("scoring %s with the split settings of checkpoint %s; its training studies are left out",
                config.data.data_dir, checkpoint)  # fmt: skip
    return ScoringPlan(own, with_data(config, other), True, trained.train_uids)


def _names_other_dataset(config: RunConfig, own: RunConfig, trained: TrainedData) -> bool:
    if not config.data.data_dir:
        return False
    folder = config.local_path(config.data.data_dir)
    recorded = trained.root or (str(own.local_path(own.data.data_dir)) if own.data.data_dir else None)
    if recorded and folder.resolve() == Path(recorded).resolve():
        return False
    source = own.data.source
    if trained.fingerprint and _same_layout_files(folder, source):
        return dataset_fingerprint(folder, source) != trained.fingerprint
    return True
