"""Grayscale uint8 X-rays to SigLIP pixel values, and the light train-time augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MAX_SHIFT = 0.04  # fraction of the side an image may move
BRIGHTNESS = 0.1  # +- multiplicative jitter
CONTRAST = 0.1


@dataclass(frozen=True)
class ImageNormalizer:
    """Resize to the model's input side, replicate grayscale to 3 channels, normalise with the image
    processor's mean and std (the data stage caches grayscale images at data.image_size)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_model(cls, image_processor, image_size: int) -> ImageNormalizer:
        return cls(size=image_size, mean=tuple(image_processor.image_mean), std=tuple(image_processor.image_std))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: [N, 1, S, S] floats in [0, 1] -> [N, 3, size, size] normalised."""
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True)
        images = images.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def from_uint8(self, images: np.ndarray) -> torch.Tensor:
        """[N, S, S] uint8 grayscale -> [N, 3, size, size] pixel values."""
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected grayscale uint8 images [N, S, S], got {images.dtype} {images.shape}")
        return self(to_unit_float(images))


def to_unit_float(images: np.ndarray) -> torch.Tensor:
    """[..., S, S] uint8 -> [N, 1, S, S] float32 in [0, 1]."""
    return to_unit_float_tensor(torch.from_numpy(np.array(images, dtype=np.uint8)))


def to_unit_float_tensor(images: torch.Tensor) -> torch.Tensor:
    """[..., S, S] uint8 tensor (on any device) -> [N, 1, S, S] float32 in [0, 1]."""
    tensor = images.float().div_(255.0)
    return tensor.reshape(-1, 1, *tensor.shape[-2:])


def augment(image: torch.Tensor) -> torch.Tensor:
    """Light augmentation of one [1, S, S] image in [0, 1]: a small random shift (reflect-padded) and a
    brightness/contrast jitter. X-rays are not flipped: the heart sits on the left."""
    side = image.shape[-1]
    pad = max(1, round(side * MAX_SHIFT))
    padded = F.pad(image[None], (pad, pad, pad, pad), mode="reflect")[0]
    top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    image = padded[:, top : top + side, left : left + side]
    brightness = 1 + (torch.rand(()) * 2 - 1) * BRIGHTNESS
    contrast = 1 + (torch.rand(()) * 2 - 1) * CONTRAST
    mean = image.mean()
    return ((image - mean) * contrast + mean * brightness).clamp_(0, 1)
