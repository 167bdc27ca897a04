"""Decode one PNG into the square 8-bit grayscale array every consumer expects.

Real and synthetic IU-Xray PNGs are mostly 8-bit grayscale, but some are 16-bit or RGB; all become
8-bit grayscale here. A file that does not decode yields ``None`` (the caller counts and skips it).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

DecodeKind = Literal["gray8", "16bit", "rgb", "other", "undecodable"]
"""How the source was stored ("other": palette, gray with alpha...), or that it did not decode."""

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def _to_gray8(img: Image.Image) -> tuple[Image.Image, DecodeKind]:
    if img.mode == "L":
        return img, "gray8"
    if img.mode in _SIXTEEN_BIT_MODES:
        # Scale by the 16-bit range, not by the image's own maximum, so contrast means the same in every file.
        pixels = np.asarray(img, dtype=np.float32) / 257.0
        return Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8)), "16bit"
    kind = "rgb" if img.mode in ("RGB", "RGBA") else "other"
    return img.convert("L"), kind


def decode_image(path: str, size: int) -> tuple[np.ndarray | None, DecodeKind]:
    """The image at `path` as uint8 [size, size] (aspect not kept, as SigLIP's processor does), and its kind."""
    try:
        with Image.open(path) as img:
            img.load()
            gray, kind = _to_gray8(img)
            # reducing_gap lets PIL shrink large films in integer steps first: much faster, same quality.
            resized = gray.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
            return np.asarray(resized, dtype=np.uint8), kind
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None, "undecodable"
