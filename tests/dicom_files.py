"""Write small DICOM files for tests: the pixel encodings X-ray files use (8 and 16 bit, MONOCHROME1 and 2,
rescale slope/intercept, a window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIGITAL_XRAY = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
) -> Path:
    """``stored`` (uint8 or uint16 [H, W]) as the file's pixel data, with the given interpretation tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = DIGITAL_XRAY
    dataset.SOPClassUID = DIGITAL_XRAY
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.Modality = "DX"
    dataset.set_pixel_data(stored, photometric_interpretation=photometric, bits_stored=stored.dtype.itemsize * 8)
    if slope is not None:
        dataset.RescaleSlope = slope
        dataset.RescaleIntercept = intercept or 0.0
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.save_as(path, enforce_file_format=True)
    return path
