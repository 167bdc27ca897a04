"""Cartoon chest radiographs whose drawn features match the synthetic report text.

The features are large and high-contrast on purpose: a tiny SigLIP sees these images at 64x64
(8x8 patches), so a condition must change many pixels by a lot to be learnable in seconds.
Coordinates are fractions of the image (x to the right of the viewer, y down); the patient's left
is on the viewer's right, as on a real PA film.
"""

from __future__ import annotations

import numpy as np

# Intensities in [0, 1]: air is dark, soft tissue grey, bone and fluid bright.
_AIR, _BODY, _LUNG, _MEDIASTINUM, _HEART, _FLUID, _NODULE = 0.05, 0.55, 0.3, 0.7, 0.8, 0.8, 1.0


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _grid(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates as fractions, with a small random shift and zoom so no two images align exactly."""
    shift_x, shift_y = rng.uniform(-0.02, 0.02, size=2)
    zoom = rng.uniform(0.97, 1.03)
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    xx, yy = np.meshgrid((xs - 0.5) / zoom + 0.5 + shift_x, (ys - 0.5) / zoom + 0.5 + shift_y)
    return xx, yy


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness jitter and film noise, then 8-bit."""
    img = img * rng.uniform(0.9, 1.1) + rng.normal(0.0, 0.03, size=img.shape)
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def draw_frontal(
    conditions: tuple[str, ...], sides: dict[str, str], width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    """A PA view: two lungs, mediastinum, heart; each condition changes a large region."""
    xx, yy = _grid(width, height, rng)
    img = np.full((height, width), _AIR)
    img[_ellipse(xx, yy, 0.5, 0.55, 0.46, 0.5)] = _BODY
    # Lungs are textured (vessel markings) so that a pneumothorax reads as markings missing.
    texture = 0.08 * np.sin(xx * 60) * np.sin(yy * 45)
    lung_right = _ellipse(xx, yy, 0.3, 0.45, 0.15, 0.3)  # patient's right, viewer's left
    lung_left = _ellipse(xx, yy, 0.7, 0.45, 0.15, 0.3)
    lungs = lung_right | lung_left
    img[lungs] = _LUNG + texture[lungs]
    img[(np.abs(xx - 0.5) < 0.05) & (yy > 0.1) & (yy < 0.62)] = _MEDIASTINUM
    heart_rx = 0.27 if "cardiomegaly" in conditions else 0.12
    img[_ellipse(xx, yy, 0.54, 0.68, heart_rx, 0.13)] = _HEART
    if "effusion_right" in conditions:
        img[lung_right & (yy > 0.5 + 0.1 * (xx - 0.15))] = _FLUID  # meniscus rising toward the chest wall
    if "effusion_left" in conditions:
        img[lung_left & (yy > 0.5 - 0.1 * (xx - 0.85))] = _FLUID
    if "pneumothorax" in conditions:
        collapsed = lung_right & (xx < 0.3)
        img[collapsed] = 0.0  # no lung markings lateral to the pleural line
        img[lung_right & (np.abs(xx - 0.3) < 0.015)] = 0.9
    if "consolidation" in conditions:
        cx = 0.3 if sides.get("consolidation", "right") == "right" else 0.7
        img[_ellipse(xx, yy, cx, 0.5, 0.13, 0.14) & lungs] = 0.85
    if "nodule" in conditions:
        cx = 0.3 if sides.get("nodule", "right") == "right" else 0.7
        img[_ellipse(xx, yy, cx, 0.28, 0.07, 0.07)] = _NODULE
    return _finish(img, rng)


def draw_lateral(
    conditions: tuple[str, ...], sides: dict[str, str], width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    """A lateral view: one lung field, the heart in front (viewer's left), the spine behind."""
    del sides  # a lateral film does not show the side
    xx, yy = _grid(width, height, rng)
    img = np.full((height, width), _AIR)
    img[_ellipse(xx, yy, 0.5, 0.55, 0.42, 0.5)] = _BODY
    lung = _ellipse(xx, yy, 0.5, 0.45, 0.3, 0.33)
    img[lung] = _LUNG
    img[(np.abs(xx - 0.82) < 0.05) & (yy > 0.1)] = _MEDIASTINUM  # spine
    heart_rx = 0.22 if "cardiomegaly" in conditions else 0.11
    img[_ellipse(xx, yy, 0.33, 0.65, heart_rx, 0.15)] = _HEART
    if "effusion_left" in conditions or "effusion_right" in conditions:
        img[lung & (yy > 0.62) & (xx > 0.45)] = _FLUID  # posterior costophrenic sulcus
    if "pneumothorax" in conditions:
        img[lung & (yy < 0.25)] = 0.0
    if "consolidation" in conditions:
        img[_ellipse(xx, yy, 0.6, 0.55, 0.12, 0.1) & lung] = 0.85
    if "nodule" in conditions:
        img[_ellipse(xx, yy, 0.5, 0.3, 0.05, 0.05)] = _NODULE
    return _finish(img, rng)
