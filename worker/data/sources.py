"""Where the dataset comes from: generated or downloaded IU-Xray, or a folder (or manifest file) the user names.

Every source ends in a dataset in its layout (read by ``worker.data.readers``) plus a folder for what the
data stage derives from it (split manifest, image caches). For the synthetic source that is ``prepared/``
inside the generated dataset; for everything else, which may be read-only or shared, it is
``var/data/prepared/<name>`` beside the other prepared data.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from worker.config import IU_XRAY_SOURCES, ConfigError, RunConfig
from worker.data.layout import REPORTS_CSV
from worker.data.readers import reader_for
from worker.data.synthetic import Planted, ensure_synthetic_dataset, synthetic_dataset_name

logger = logging.getLogger(__name__)


class DataSourceError(ConfigError):
    """The dataset cannot be obtained; the one-line message names the ways out."""


@dataclass(frozen=True)
class DatasetLocation:
    source: str
    root: Path
    """The dataset in its layout: a folder, or for source=manifest the manifest file."""
    prepared_dir: Path
    """Where the split manifest and the image caches go."""
    planted: Planted | None = None
    """The synthetic generator's ground truth (synthetic source only)."""


_LOCAL_HINT = "pass --data-dir PATH of a local IU-Xray copy (a folder in the Kaggle layout)"
_DATA_DIR_HINT = {
    "mimic-cxr": "pass --data-dir PATH of a MIMIC-CXR-JPG folder (docs/datasets.md)",
    "chexpert-plus": "pass --data-dir PATH of a CheXpert Plus folder (docs/datasets.md)",
    "manifest": "pass --data-dir PATH of your manifest file (.csv, .jsonl or .parquet; docs/datasets.md)",
}


def locate_dataset(config: RunConfig) -> DatasetLocation:
    """Find, download or generate the dataset the config names. A set data_dir wins over a Kaggle download."""
    data = config.data
    if data.source == "synthetic":
        root = config.var_path("data", synthetic_dataset_name(data.synthetic_studies, data.synthetic_seed))
        planted = ensure_synthetic_dataset(root, data.synthetic_studies, data.synthetic_seed)
        return DatasetLocation("synthetic", root, root / "prepared", planted)
    if data.data_dir:
        root = config.local_path(data.data_dir)  # the path the job system checked against the roots
        if not root.exists():
            hint = _DATA_DIR_HINT.get(data.source, _LOCAL_HINT)
            raise DataSourceError(f"data.data_dir {root} does not exist; {hint}")
        reader_for(data.source).check_layout(root)
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
        kind = "local" if data.source in IU_XRAY_SOURCES else data.source
        return DatasetLocation(kind, root, config.var_path("data", "prepared", f"{kind}-{root.name}-{digest}"))
    if data.source != "kaggle":
        raise DataSourceError(
            f"data.source={data.source} needs data.data_dir: {_DATA_DIR_HINT.get(data.source, _LOCAL_HINT)}"
        )
    root = _download_kaggle(data.kaggle_dataset)
    reader_for("kaggle").check_layout(root)
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
