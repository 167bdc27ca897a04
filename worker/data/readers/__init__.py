"""Dataset readers, one per layout; ``reader_for(source)`` picks the one a ``data.source`` reads."""

from __future__ import annotations

from worker.config import IU_XRAY_SOURCES
from worker.data.readers.base import DataLayoutError, DatasetReader, ImageRow, ParsedDataset, ReadOptions
from worker.data.readers.chexpert_plus import CHEXPERT_PLUS
from worker.data.readers.iu_xray import IU_XRAY
from worker.data.readers.manifest import MANIFEST
from worker.data.readers.mimic_cxr import MIMIC_CXR

__all__ = ["DataLayoutError", "DatasetReader", "ImageRow", "ParsedDataset", "ReadOptions", "reader_for"]


def reader_for(source: str) -> DatasetReader:
    """The reader of ``data.source``'s layout (synthetic, kaggle and local are all the Kaggle IU-Xray layout)."""
    if source in IU_XRAY_SOURCES:
        return IU_XRAY
    if source == "chexpert-plus":
        return CHEXPERT_PLUS
    if source == "manifest":
        return MANIFEST
    if source == "mimic-cxr":
        return MIMIC_CXR
    raise DataLayoutError(f"data.source={source} has no reader yet")
