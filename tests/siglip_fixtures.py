"""In-process fixtures for the SigLIP tests: a tiny SigLIP checkpoint and fake image/text splits with a
learnable signal (each condition puts a bright square at its own place and has its own report text)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worker.config import RunConfig, load_config

CONDITIONS = [
    "no acute cardiopulmonary abnormality",
    "cardiomegaly without edema",
    "right pleural effusion",
    "left lower lobe pneumonia",
    "hyperinflated lungs consistent with copd",
    "healed right rib fracture",
]
IMAGE_SIZE = 32


@dataclass(frozen=True)
class FakeSplit:
    name: str
    texts: list[str]
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class FakeSplits:
    splits: dict[str, FakeSplit]

    def split(self, name: str) -> FakeSplit:
        return self.splits[name]


def fake_splits(sizes: dict[str, int] | None = None, seed: int = 0) -> FakeSplits:
    rng = np.random.default_rng(seed)
    sizes = sizes or {"train": 96, "val": 36}
    splits = {}
    for name, n in sizes.items():
        labels = np.arange(n) % len(CONDITIONS)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, IMAGE_SIZE, IMAGE_SIZE)).astype(np.uint8)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 3)
            images[i, 4 + row * 12 : 4 + row * 12 + 10, 2 + col * 10 : 2 + col * 10 + 8] += 180
        splits[name] = FakeSplit(name, [CONDITIONS[k] for k in labels], images)
    return FakeSplits(splits)


def build_tiny_siglip(directory: Path) -> Path:
    """A 2-layer SigLIP (width 64, 32 px images) with a word-level tokenizer and SigLIP's image processor."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel

    words = sorted({w for text in CONDITIONS for w in text.split()})
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="</s>", model_max_length=16
    )
    tower = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = SiglipConfig(
        text_config={**tower, "vocab_size": len(vocab), "max_position_embeddings": 16, "pad_token_id": 0,
                     "eos_token_id": 2, "bos_token_id": None},
        vision_config={**tower, "image_size": IMAGE_SIZE, "patch_size": 8},
    )
    torch.manual_seed(0)
    SiglipModel(config).save_pretrained(directory)  # HF's (0, 0) logit init: the loader must fix it
    tokenizer.save_pretrained(directory)
    SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    return directory


def tiny_config(model_dir: Path, run_dir: Path, **overrides: object) -> RunConfig:
    """The smoke preset pointed at the in-process tiny model, with a short schedule."""
    base = {
        "model.siglip": str(model_dir),
        "model.build_tiny_fixtures": False,
        "paths.run_dir": str(run_dir),
        "train.max_text_length": 16,
        "train.batch_size": 24,
        "train.epochs": 2,
        "train.warmup_steps": 2,
        "data.num_workers": 0,
    }
    return load_config("smoke", {**base, **overrides})


def ddp_main(model_dir: str, run_dir: str, out_dir: str) -> None:
    """Entry point of the two-process DDP test. Lightning's "ddp" strategy starts the other ranks by
    re-running this script, so each rank rebuilds the same fake splits and writes its own result file."""
    import json
    import os

    from worker.recorder import MemoryRecorder
    from worker.siglip.stage import run_training

    torch.set_num_threads(1)
    config = tiny_config(Path(model_dir), Path(run_dir), **{
        "peft.method": "qlora", "train.devices": 2, "train.epochs": 1, "train.batch_size": 8,
    })
    recorder = MemoryRecorder()
    result = run_training(config, recorder, fake_splits({"train": 48, "val": 24}))
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    Path(out_dir, f"rank-{rank}.json").write_text(json.dumps({
        "result": result.to_dict(),
        "progress_events": len(recorder.progress_events),
        "metric_rows": len(recorder.rows),
    }))


if __name__ == "__main__":
    import sys

    ddp_main(*sys.argv[1:4])
