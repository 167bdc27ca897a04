"""Read user images (PNG, JPEG, DICOM) into the 8-bit grayscale squares the models were trained on.

Every file either decodes or gets a one-line reason (missing, empty, wrong format, corrupt); one bad file
never stops the others. DICOM pixel data goes through its modality rescale (slope/intercept, e.g. to
Hounsfield units), then its window (Window Center/Width, else the image's own range), then MONOCHROME1
inversion, so that bright means dense as in the PNG training images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from worker.data.images import decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"


class UnreadableImage(ValueError):
    """A file that is not a usable image; the message says why."""


@dataclass(frozen=True)
class InputImage:
    """One input file: its pixels (uint8 [size, size]) and format, or why it could not be read."""

    path: str
    pixels: np.ndarray | None = None
    format: str | None = None
    error: str | None = None


def collect_paths(paths: list[str]) -> list[Path]:
    """Files as given, and each folder's PNG, JPEG and DICOM files (by suffix, or none: DICOM files often have
    no suffix), recursively and sorted. A missing path stays in the list, to be reported on its own line."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*")
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (*IMAGE_SUFFIXES, "")
                )
            )  # fmt: skip
        else:
            found.append(path)
    return found


def sniff_format(path: Path) -> str:
    """png, jpeg or dicom from the file's first bytes (a .dcm suffix also counts: some DICOMs lack the preamble)."""
    with path.open("rb") as handle:
        head = handle.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    if not head:
        raise UnreadableImage("empty file (0 bytes)")
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC or path.suffix.lower() in (".dcm", ".dicom"):
        return "dicom"
    raise UnreadableImage("not a PNG, JPEG or DICOM file (unrecognised content); convert it to one of those")


def read_image(path: Path, size: int) -> InputImage:
    """The file as uint8 [size, size] grayscale, or an InputImage carrying the reason it could not be read."""
    try:
        if not path.exists():
            raise UnreadableImage("no such file")
        if not path.is_file():
            raise UnreadableImage("not a regular file")
        kind = sniff_format(path)
        pixels = dicom_to_uint8(path) if kind == "dicom" else None
        if pixels is not None:
            return InputImage(str(path), resize_square(pixels, size), kind)
        decoded, _ = decode_image(str(path), size)
        if decoded is None:
            raise UnreadableImage(f"{kind.upper()} data does not decode (truncated or corrupt file)")
        return InputImage(str(path), decoded, kind)
    except UnreadableImage as exc:
        return InputImage(str(path), error=str(exc))
    except OSError as exc:
        return InputImage(str(path), error=f"cannot read the file ({exc.strerror or exc})")


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W] -> [size, size], as the data stage resizes its PNGs (aspect not kept, like SigLIP's processor)."""
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def dicom_to_uint8(path: Path) -> np.ndarray:
    """A DICOM image's first frame as uint8 grayscale: rescaled, windowed, MONOCHROME1 inverted."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        dataset = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise UnreadableImage(f"DICOM header does not parse ({exc.__class__.__name__})") from None
    if "PixelData" not in dataset:
        raise UnreadableImage("DICOM file without pixel data (a report or structured document?)")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported or damaged pixel data
        raise UnreadableImage(
            f"DICOM pixel data does not decode ({exc.__class__.__name__}: {exc}); compressed transfer syntaxes need "
            "pydicom's optional decoders (pylibjpeg or gdcm)"
        ) from None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if int(dataset.get("SamplesPerPixel", 1)) == 3:  # colour DICOM (rare for X-rays): luminance
        pixels = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    low, high = window_bounds(dataset, values)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled  # MONOCHROME1: the lowest value is white
    return np.round(scaled * 255.0).astype(np.uint8)


def window_bounds(dataset, values: np.ndarray) -> tuple[float, float]:
    """The first Window Center/Width of the file (in rescaled units), else the image's own value range."""
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is not None and width is not None:
        center = float(center[0] if _is_multi(center) else center)
        width = float(width[0] if _is_multi(width) else width)
        if width > 0:
            return center - width / 2.0, center + width / 2.0
    return float(values.min()), float(values.max())


def _is_multi(value) -> bool:
    return not isinstance(value, str | bytes) and hasattr(value, "__len__")
