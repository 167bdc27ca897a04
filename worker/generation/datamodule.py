"""Teacher-forcing batches: precomputed image features with the tokenized target report."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from worker.generation.model import IGNORE_INDEX


def encode_targets(tokenizer, texts: list[str], max_tokens: int, eos_id: int) -> list[list[int]]:
    """Token ids of each text as the tokenizer writes it (BioGPT: ``</s>`` first), cut to fit, then eos."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_tokens - 1)["input_ids"]
    return [[*ids, eos_id] for ids in encoded]


class ReportDataset(Dataset):
    def __init__(self, features: torch.Tensor, targets: list[list[int]]):
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} feature rows but {len(targets)} target texts")
        self.features = features
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int], int]:
        return self.features[index], self.targets[index], index


class TargetCollator:
    """Right-pads a batch; labels ignore padding and the start tokens (they are given, not predicted)."""

    def __init__(self, pad_id: int, start_len: int):
        self.pad_id = pad_id
        self.start_len = start_len

    def __call__(self, items: list[tuple[torch.Tensor, list[int], int]]) -> dict[str, torch.Tensor]:
        longest = max(len(ids) for _, ids, _ in items)
        input_ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (_, ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids)
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
