"""Teacher-forcing batches: precomputed image features with the tokenized target report."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from worker.generation.features import FeatureRows
from worker.generation.model import IGNORE_INDEX

ENCODE_BATCH = 1024
"""Texts tokenized at once: the tokenizer's Python lists of a whole training split are never held."""


class TokenRows:
    """Token ids of N texts in one int32 array, text i at ``ids[offsets[i]:offsets[i + 1]]``: a 200k-report
    split takes 4 bytes a token instead of a Python list of ints per text."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray):
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(ids):
            raise ValueError("offsets must start at 0 and end at the number of ids")
        self.ids = ids
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


def encode_targets(tokenizer, texts: Sequence[str], max_tokens: int, eos_id: int) -> TokenRows:
    """Token ids of each text as the tokenizer writes it (BioGPT: ``</s>`` first), cut to fit, then eos.
    Tokenized ``ENCODE_BATCH`` texts at a time (truncation is per text: the same ids as all at once)."""
    ids: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for start in range(0, len(texts), ENCODE_BATCH):
        encoded = tokenizer(list(texts[start : start + ENCODE_BATCH]), truncation=True, max_length=max_tokens - 1)
        batch = encoded["input_ids"]
        ids.append(np.fromiter(chain.from_iterable([*row, eos_id] for row in batch), dtype=np.int32))
        lengths.append(np.fromiter((len(row) + 1 for row in batch), dtype=np.int64, count=len(batch)))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return TokenRows(np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32), offsets)


class ReportDataset(Dataset):
    """Study i: its features row (a tensor in memory, or a features file read a batch of rows at a time)
    and its target token ids."""

    def __init__(self, features: torch.Tensor | FeatureRows, targets: TokenRows | Sequence[Sequence[int]]):
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} feature rows but {len(targets)} target texts")
        self.features = features
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Sequence[int], int]:
        return self.features[index], self.targets[index], index

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, Sequence[int], int]]:
        """A loader's whole batch: its feature rows in one read."""
        rows = self.features[list(indices)]
        return [(rows[j], self.targets[i], i) for j, i in enumerate(indices)]


class TargetCollator:
    """Right-pads a batch; labels ignore padding and the start tokens (they are given, not predicted)."""

    def __init__(self, pad_id: int, start_len: int):
        self.pad_id = pad_id
        self.start_len = start_len

    def __call__(self, items: list[tuple[torch.Tensor, Sequence[int], int]]) -> dict[str, torch.Tensor]:
        longest = max(len(ids) for _, ids, _ in items)
        input_ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (_, ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.as_tensor(ids)
            mask[row, : len(ids)] = 1
        labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
        labels[:, : self.start_len] = IGNORE_INDEX
        return {
            "features": torch.stack([f for f, _, _ in items]),
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels,
            "index": torch.tensor([i for _, _, i in items]),
        }


class ReportDataModule(L.LightningDataModule):
    def __init__(self, train: ReportDataset, val: ReportDataset, collate: TargetCollator, batch_size: int):
        super().__init__()
        self.train_set = train
        self.val_set = val
        self.collate = collate
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)
