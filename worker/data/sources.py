"""Where the IU-Xray files come from: generated, downloaded from Kaggle, or a local copy.

Every source ends in a folder in the Kaggle layout plus a folder for what the data stage derives from
it (split manifest, image caches). For the synthetic source that is ``prepared/`` inside the generated
dataset; for Kaggle and local copies, which may be read-only or shared, it is
``var/data/prepared/<name>`` beside the other prepared data.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from worker.config import ConfigError, RunConfig
from worker.data.layout import REPORTS_CSV
from worker.data.parsing import check_layout
from worker.data.synthetic import Planted, ensure_synthetic_dataset, synthetic_dataset_name

logger = logging.getLogger(__name__)


class DataSourceError(ConfigError):
    """The dataset cannot be obtained; the one-line message names the ways out."""


@dataclass(frozen=True)
class DatasetLocation:
    source: str
    root: Path
    """The folder in the Kaggle layout."""
    prepared_dir: Path
    """Where the split manifest and the image caches go."""
    planted: Planted | None = None
    """The synthetic generator's ground truth (synthetic source only)."""


def locate_dataset(config: RunConfig) -> DatasetLocation:
    """Find, download or generate the dataset the config names. A set data_dir wins over a Kaggle download."""
    data = config.data
    if data.source == "synthetic":
        root = config.var_path("data", synthetic_dataset_name(data.synthetic_studies, data.synthetic_seed))
        planted = ensure_synthetic_dataset(root, data.synthetic_studies, data.synthetic_seed)
        return DatasetLocation("synthetic", root, root / "prepared", planted)
    if data.data_dir:
        root = config.local_path(data.data_dir)  # the folder the job system checked against the roots
        if not root.is_dir():
            raise DataSourceError(f"data.data_dir {root} does not exist; pass --data-dir PATH of a local IU-Xray copy")
        check_layout(root)
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
        return DatasetLocation("local", root, config.var_path("data", "prepared", f"local-{root.name}-{digest}"))
    if data.source == "local":
        raise DataSourceError(
            "data.source=local needs data.data_dir: pass --data-dir PATH (a folder in the Kaggle IU-Xray layout)"
        )
    root = _download_kaggle(data.kaggle_dataset)
    check_layout(root)
    slug = data.kaggle_dataset.replace("/", "__")
    return DatasetLocation("kaggle", root, config.var_path("data", "prepared", f"kaggle-{slug}"))


def _download_kaggle(handle: str) -> Path:
    """kagglehub's cached download of `handle`; any failure becomes one line with the ways out."""
    ways_out = (
        "offline or without Kaggle credentials, use a local copy with --data-dir PATH "
        "(or --set data.source=local --set data.data_dir=PATH), or the offline preset --preset smoke"
    )
    try:
        import kagglehub

        path = Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # network, auth, and kagglehub's own errors all mean the same to the user
        reason = (str(exc).strip().splitlines() or [""])[0]
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        raise DataSourceError(
            f"could not download Kaggle dataset '{handle}' ({type(exc).__name__}: {reason}); {ways_out}"
        ) from None
    # Some dataset versions unpack into a subfolder; take the folder that holds the reports CSV.
    if not (path / REPORTS_CSV).is_file():
        found = sorted(path.rglob(REPORTS_CSV))
        if found:
            path = found[0].parent
    logger.info("Kaggle dataset %s at %s", handle, path)
    return path
