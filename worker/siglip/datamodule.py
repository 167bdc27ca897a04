"""The data side of training: image/text pairs from the data stage's cached splits."""

from __future__ import annotations

from typing import Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from worker.config import RunConfig
from worker.siglip.preprocess import ImageNormalizer, augment, to_unit_float
from worker.siglip.retrieval import text_ids


class PairSplit(Protocol):
    """What the datamodule reads from a split (worker.data.SplitData satisfies it)."""

    texts: list[str]
    images: np.ndarray


class Splits(Protocol):
    def split(self, name: str) -> PairSplit: ...


def tokenize(tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """Token ids padded to max_length, as SigLIP was trained (its text tower pools the last position)."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return encoded["input_ids"]


class PairDataset(Dataset):
    """One item per image: pixel values, token ids, the id of its text (equal texts share it), its index."""

    def __init__(self, split: PairSplit, input_ids: torch.Tensor, normalizer: ImageNormalizer, train: bool):
        if len(split.texts) != len(split.images):
            raise ValueError(f"split has {len(split.images)} images but {len(split.texts)} texts")
        self.images = split.images  # memory-mapped uint8 [N, S, S]; read one row at a time
        self.input_ids = input_ids
        self.text_ids = torch.tensor(text_ids(list(split.texts)))
        self.normalizer = normalizer
        self.train = train

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = to_unit_float(self.images[index])[0]
        if self.train:
            image = augment(image)
        return {
            "pixel_values": self.normalizer(image[None])[0],
            "input_ids": self.input_ids[index],
            "text_id": self.text_ids[index],
            "index": torch.tensor(index),
        }


class SiglipDataModule(L.LightningDataModule):
    def __init__(self, config: RunConfig, splits: Splits, tokenizer, normalizer: ImageNormalizer):
        super().__init__()
        self.config = config
        self.splits = splits
        self.tokenizer = tokenizer
        self.normalizer = normalizer
        self.datasets: dict[str, PairDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for name in ("train", "val"):
            if name in self.datasets:
                continue
            split = self.splits.split(name)
            if len(split.texts) < 2:
                raise ValueError(f"the {name} split has {len(split.texts)} pairs; training needs at least 2")
            ids = tokenize(self.tokenizer, list(split.texts), self.config.train.max_text_length)
            augmented = name == "train" and self.config.train.augment
            self.datasets[name] = PairDataset(split, ids, self.normalizer, train=augmented)

    def val_texts(self) -> list[str]:
        return list(self.splits.split("val").texts)

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        # A last batch of one pair has no negatives; drop the remainder when there is a full batch.
        return self._loader(dataset, shuffle=True, drop_last=len(dataset) > self.config.train.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], shuffle=False, drop_last=False)

    def _loader(self, dataset: PairDataset, *, shuffle: bool, drop_last: bool) -> DataLoader:
        workers = self.config.data.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.train.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
