"""The data side of training: image/text pairs from the data stage's cached splits."""

from __future__ import annotations

from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from worker.config import RunConfig
from worker.siglip.preprocess import ImageNormalizer, augment, to_unit_float_tensor
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
    """One item per image: its cached uint8 pixels, its text, the id of its text (equal texts share it), its
    index. Pixels stay uint8 and single-channel until they reach the device (SiglipDataModule.model_inputs):
    a worker then ships a twelfth of the bytes of a normalised 3-channel float image, and the float work
    runs on the GPU (measured with bench/data.py: 8.5x the images per second at 448 px). Texts are tokenized
    a batch at a time by PairCollator, so no tensor of every text's token ids is ever held."""

    def __init__(self, split: PairSplit):
        if len(split.texts) != len(split.images):
            raise ValueError(f"split has {len(split.images)} images but {len(split.texts)} texts")
        self.images = split.images  # memory-mapped uint8 [N, S, S]; read one row at a time
        self.texts = split.texts
        self.text_ids = torch.from_numpy(text_ids(split.texts))

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "pixels": torch.from_numpy(np.array(self.images[index], dtype=np.uint8)),
            "text": self.texts[index],
            "text_id": self.text_ids[index],
            "index": torch.tensor(index),
        }


class PairCollator:
    """Stacks a batch of PairDataset items and tokenizes its texts into ``input_ids``."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [item["text"] for item in items]
        batch = default_collate([{k: v for k, v in item.items() if k != "text"} for item in items])
        batch["input_ids"] = tokenize(self.tokenizer, texts, self.max_length)
        return batch


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
            self.datasets[name] = PairDataset(split)

    def model_inputs(self, batch: dict[str, torch.Tensor], *, augment_images: bool) -> dict[str, torch.Tensor]:
        """uint8 `pixels` [N, S, S] -> normalised `pixel_values` [N, 3, size, size], on the batch's device."""
        images = to_unit_float_tensor(batch.pop("pixels"))
        if augment_images:
            images = torch.stack([augment(image) for image in images])
        batch["pixel_values"] = self.normalizer(images)
        return batch

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        training = self.trainer is not None and self.trainer.training
        return self.model_inputs(batch, augment_images=training and self.config.train.augment)

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
            collate_fn=PairCollator(self.tokenizer, self.config.train.max_text_length),
        )
