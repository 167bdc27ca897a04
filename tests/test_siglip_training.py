"""The training stage on fake splits and an in-process tiny SigLIP: what it returns and records, what its
checkpoints hold, that they reload onto a fresh base model, cancellation and resume."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from siglip_fixtures import CONDITIONS, build_tiny_siglip, fake_splits, tiny_config

from worker.recorder import MemoryRecorder
from worker.siglip.checkpoint import load_finetuned_siglip, read_checkpoint
from worker.siglip.model import LoadPlan
from worker.siglip.stage import run_training, setup_training

RESULT_METRICS = [
    "train_loss", "val_loss", "pos_cosine", "neg_cosine", "train_time_s", "samples_per_s", "peak_gpu_mem_mb",
    "peak_gpu_reserved_mb", "peak_ram_mb", "trainable_params", "total_params", "epochs_run", "best_checkpoint",
    "weight_memory_mb", "best_val_loss",
] + [
    f"{d}_recall@{k}{suffix}" for d in ("i2t", "t2i") for k in (1, 5, 10)
    for suffix in ("", "_strict", "_chance", "_strict_chance")
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="module")
def splits():
    return fake_splits({"train": 48, "val": 24})


def test_stage_returns_and_records_every_named_metric(model_dir, splits, tmp_path):
    config = tiny_config(model_dir, tmp_path, **{"train.epochs": 2})
    recorder = MemoryRecorder()
    result = run_training(config, recorder, splits)

    assert result.status == "succeeded"
    assert set(RESULT_METRICS) <= set(result.metrics)
    assert result.metrics["epochs_run"] == 2
    assert result.metrics["peak_gpu_mem_mb"] is None  # CPU
    assert result.metrics["peak_ram_mb"] > 100
    assert result.metrics["samples_per_s"] > 0
    assert result.metrics["best_val_loss"] == pytest.approx(min(recorder.series("val_loss")))
    assert len(recorder.series("train_loss", split="train")) == 2
    assert len(recorder.series("i2t_recall@1", split="val")) == 2
    times = recorder.series("train_time_s", split="train")
    assert len(times) == 2 and times[0] < times[1] <= result.metrics["train_time_s"]
    assert len(recorder.series("peak_ram_mb", split="train")) == 2
    _, steps, totals = zip(*recorder.progress_events, strict=True)
    assert steps[-1] == totals[-1] == 2 * (48 // 24)
    assert result.artifacts["best_checkpoint"] == result.metrics["best_checkpoint"]
    # One line per validation image at the best epoch; its hits average to the recorded recall@1.
    lines = [json.loads(line) for line in Path(result.artifacts["val_hits"]).read_text().splitlines()]
    assert len(lines) == 24 and len({line["image"] for line in lines}) == 24
    for direction in ("i2t", "t2i"):
        hits = [line[f"{direction}_hit@1"] for line in lines]
        assert sum(hits) / len(hits) == pytest.approx(result.metrics[f"{direction}_recall@1"])


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_checkpoint_holds_only_trainable_tensors_and_reloads_onto_a_fresh_base(model_dir, splits, tmp_path, method):
    config = tiny_config(model_dir, tmp_path, **{"peft.method": method, "train.epochs": 1})
    plan = LoadPlan(quantize=method == "qlora", weights_dtype=torch.float32)
    module, datamodule = setup_training(config, splits, plan)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "adapter.ckpt"
    trainer.save_checkpoint(path)

    checkpoint = read_checkpoint(path)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(checkpoint["state_dict"]) == trainable
    assert checkpoint["run_config"]["peft"]["method"] == method

    images = splits.split("val").images[:6]
    module.eval()
    with torch.no_grad():
        batch = datamodule.model_inputs(next(iter(datamodule.val_dataloader())), augment_images=False)
        trained_image, trained_text = module.encode(batch["pixel_values"][:6], batch["input_ids"][:6])
    # merge=False rebuilds the training-time model (4-bit base for QLoRA): it reproduces the embeddings.
    exact = load_finetuned_siglip(str(path), merge=False)
    torch.testing.assert_close(exact.encode_images(images), trained_image, atol=1e-5, rtol=1e-4)
    texts = splits.split("val").texts[:6]
    torch.testing.assert_close(exact.encode_texts(texts), trained_text, atol=1e-5, rtol=1e-4)

    merged = load_finetuned_siglip(str(path), merge=True)
    assert not any("lora_" in n for n, _ in merged.model.named_parameters())
    cosine = (merged.encode_images(images) * trained_image).sum(dim=1)
    # LoRA merges exactly; QLoRA's merged full-precision base differs by the NF4 rounding of the base.
    assert cosine.min() > (0.9999 if method == "lora" else 0.9)
    pooled, patches = merged.vision_features(merged.normalizer.from_uint8(images))
    assert pooled.shape == (6, 64) and patches.shape == (6, 16, 64)
    assert merged.encode_texts(CONDITIONS).norm(dim=1) == pytest.approx(torch.ones(len(CONDITIONS)))


def test_cancel_saves_a_checkpoint_and_resume_continues_from_it(model_dir, splits, tmp_path):
    recorder = MemoryRecorder(cancel_requested=True)
    config = tiny_config(model_dir, tmp_path, **{"train.epochs": 2})
    cancelled = run_training(config, recorder, splits)
    assert cancelled.status == "cancelled"
    assert len(recorder.progress_events) == 1  # stopped after the first step
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert cancelled.artifacts["last_checkpoint"] == str(last)
    assert read_checkpoint(last)["global_step"] == 1

    resumed_config = tiny_config(model_dir, tmp_path, **{"train.epochs": 2, "train.resume": True})
    recorder = MemoryRecorder()
    resumed = run_training(resumed_config, recorder, splits)
    assert resumed.status == "succeeded"
    assert resumed.metrics["resumed_from"] == str(last)
    assert resumed.metrics["epochs_run"] == 2
    assert recorder.progress_events[0][1] == 2  # the first step after resuming is the run's second


def test_a_bad_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_finetuned_siglip(str(tmp_path / "missing.ckpt"))
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a SigLIP adapter checkpoint"):
        load_finetuned_siglip(str(tmp_path / "other.ckpt"))


@pytest.mark.parametrize("overrides", [
    {"train.loss": "infonce"},
    {"peft.method": "qlora", "train.gradient_checkpointing": True},
    {"peft.method": "qlora", "train.precision": "bf16-mixed"},  # the GPU recipe's dtypes, under CPU autocast
], ids=["infonce", "qlora-checkpointing", "qlora-bf16-mixed"])
def test_the_config_switches_train(model_dir, splits, tmp_path, overrides):
    config = tiny_config(model_dir, tmp_path, **{"train.epochs": 1, **overrides})
    result = run_training(config, MemoryRecorder(), splits)
    assert result.status == "succeeded"
    assert result.metrics["precision"] == overrides.get("train.precision", "32-true")
    assert torch.isfinite(torch.tensor(result.metrics["val_loss"]))


class _Killed(Exception):
    """Stands for a kill -9 between an epoch's checkpoint and its metric rows."""


class _KillWhenValLossRises(MemoryRecorder):
    """Dies recording the first epoch whose val_loss is above the best so far (last.ckpt is then not the best)."""

    def __init__(self) -> None:
        super().__init__()
        self.killed_at: int | None = None

    def log_metrics(self, metrics, *, split, epoch=None, step=None):
        best = min(self.series("val_loss"), default=float("inf"))
        if split == "val" and metrics["val_loss"] > best:
            self.killed_at = epoch
            raise _Killed(f"killed after epoch {epoch}")
        super().log_metrics(metrics, split=split, epoch=epoch, step=step)


class _CountingRecorder(MemoryRecorder):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, int]] = []

    def log_metrics(self, metrics, *, split, epoch=None, step=None):
        self.writes.append((split, epoch))
        super().log_metrics(metrics, split=split, epoch=epoch, step=step)


def test_a_kill_after_an_epoch_whose_val_loss_rose_resumes_at_the_next_epoch(model_dir, splits, tmp_path):
    # A learning rate this high makes the validation loss jump within a few epochs.
    settings = {"train.epochs": 8, "train.lr": 0.3, "train.warmup_steps": 0, "train.early_stopping_patience": 20}
    dying = _KillWhenValLossRises()
    with pytest.raises(_Killed):
        run_training(tiny_config(model_dir, tmp_path, **settings), dying, splits)
    killed_at = dying.killed_at
    assert killed_at is not None and killed_at >= 1
    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["epoch"] == killed_at  # last.ckpt is the finished epoch, although its val_loss was not the best

    resumed = _CountingRecorder()
    result = run_training(tiny_config(model_dir, tmp_path, **settings, **{"train.resume": True}), resumed, splits)
    assert result.status == "succeeded"
    first_epoch_trained = resumed.progress_events[0][0]
    assert first_epoch_trained == killed_at + 1  # no finished epoch trained again
    # The killed epoch's rows come from its checkpoint, once; no earlier epoch is written again.
    assert resumed.writes.count(("val", killed_at)) == 1
    assert all(epoch >= killed_at for _, epoch in resumed.writes)
    assert resumed.series("val_loss")[0] > min(dying.series("val_loss"))


def test_a_kill_before_an_epochs_last_checkpoint_leaves_the_best_it_names(model_dir, splits, tmp_path, monkeypatch):
    from worker.training import atomic_io

    write = atomic_io.atomic_torch_save

    def dies_writing_last_after_an_improvement(obj, path):
        states = [s for s in obj.get("callbacks", {}).values() if isinstance(s, dict) and "best_model_path" in s]
        improved = states and f"epoch={obj['epoch']:02d}" in states[0]["best_model_path"]
        if path.name == "last.ckpt" and obj["epoch"] >= 1 and improved:
            raise _Killed(f"killed before last.ckpt of epoch {obj['epoch']}")
        write(obj, path)

    monkeypatch.setattr(atomic_io, "atomic_torch_save", dies_writing_last_after_an_improvement)
    settings = {"train.epochs": 6, "train.early_stopping_patience": 20}
    with pytest.raises(_Killed):
        run_training(tiny_config(model_dir, tmp_path, **settings), MemoryRecorder(), splits)
    monkeypatch.setattr(atomic_io, "atomic_torch_save", write)

    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    [state] = [s for s in last["callbacks"].values() if isinstance(s, dict) and "best_model_path" in s]
    assert Path(state["best_model_path"]).is_file()  # the best the resumed run starts from is still there
    resumed_config = tiny_config(model_dir, tmp_path, **settings, **{"train.resume": True})
    resumed = run_training(resumed_config, MemoryRecorder(), splits)
    assert resumed.status == "succeeded" and Path(resumed.artifacts["best_checkpoint"]).is_file()


def test_the_base_model_is_scored_before_the_first_optimizer_step(model_dir, splits, tmp_path, monkeypatch):
    """base_* metrics: the un-adapted model's retrieval, scored before any update, and equal to an independent
    computation with plain transformers on the same validation images and texts."""
    import torch.nn.functional as F
    from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

    from worker.siglip.datamodule import tokenize
    from worker.siglip.module import SiglipContrastiveModule
    from worker.siglip.preprocess import ImageNormalizer, to_unit_float_tensor
    from worker.siglip.retrieval import retrieval_metrics

    events: list[tuple[str, int]] = []
    score, step = SiglipContrastiveModule.score_base_model, SiglipContrastiveModule.optimizer_step

    def scoring(self):
        events.append(("base", self.trainer.global_step))
        return score(self)

    def stepping(self, *args, **kwargs):
        events.append(("step", self.trainer.global_step))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(SiglipContrastiveModule, "score_base_model", scoring)
    monkeypatch.setattr(SiglipContrastiveModule, "optimizer_step", stepping)
    config = tiny_config(model_dir, tmp_path, **{"train.epochs": 2})
    result = run_training(config, MemoryRecorder(), splits)
    assert events[0] == ("base", 0) and [e for e, _ in events].count("base") == 1
    assert [e for e, _ in events[1:]] == ["step"] * 4

    base = SiglipModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    val = splits.split("val")
    pixels = ImageNormalizer.for_model(processor, base.config.vision_config.image_size)(
        to_unit_float_tensor(torch.from_numpy(val.images))
    )
    ids = tokenize(AutoTokenizer.from_pretrained(model_dir), list(val.texts), config.train.max_text_length)
    with torch.no_grad():
        image = F.normalize(base.vision_model(pixel_values=pixels).pooler_output, dim=-1)
        text = F.normalize(base.text_model(input_ids=ids).pooler_output, dim=-1)
    expected = retrieval_metrics(image, text, list(val.texts))
    for name in ("i2t_recall@1", "t2i_recall@5", "i2t_recall@10_strict", "pos_cosine", "neg_cosine"):
        assert result.metrics[f"base_{name}"] == pytest.approx(expected[name], abs=1e-5), name
    assert "base_i2t_recall@1_chance" not in result.metrics
    # Per image, beside the fine-tuned hits: their means are the base recalls@1.
    lines = [json.loads(line) for line in Path(result.artifacts["val_hits"]).read_text().splitlines()]
    for direction in ("i2t", "t2i"):
        hits = [line[f"base_{direction}_hit@1"] for line in lines]
        assert sum(hits) / len(hits) == pytest.approx(result.metrics[f"base_{direction}_recall@1"])


class _KilledAtEpoch(MemoryRecorder):
    """Dies recording the validation rows of `epoch`, after that epoch's checkpoints are written (a kill -9)."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def log_metrics(self, metrics, *, split, epoch=None, step=None):
        if split == "val" and epoch == self.epoch:
            raise _Killed(f"killed after epoch {epoch}")
        super().log_metrics(metrics, split=split, epoch=epoch, step=step)


def _throughput_state(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)["callbacks"]
    return next(value for key, value in state.items() if key.startswith("ThroughputCallback"))


def test_a_resumed_runs_report_has_per_image_intervals_and_the_time_of_every_attempt(model_dir, splits, tmp_path):
    """Killed after epoch 4 of 6, resumed: the best epoch (0, validated by the killed attempt) still has its
    per-image hits, so the report compares it image by image, and the run's time and samples span both attempts."""
    from jobs.pipelines.report import _per_item
    from worker.report.stage import build_report

    # A learning rate too small to move the weights: every epoch's val_loss is the first one's, and a checkpoint
    # is superseded only by a lower one, so the best epoch is 0, validated before the kill.
    settings = {"train.epochs": 6, "train.lr": 1e-12, "train.early_stopping_patience": 20}
    run_dir = tmp_path / "resumed"
    with pytest.raises(_Killed):
        run_training(tiny_config(model_dir, run_dir, **settings), _KilledAtEpoch(4), splits)
    before = _throughput_state(run_dir / "checkpoints" / "last.ckpt")
    resumed = run_training(tiny_config(model_dir, run_dir, **settings, **{"train.resume": True}), MemoryRecorder(),
                           splits)  # fmt: skip
    assert resumed.status == "succeeded" and resumed.metrics["epochs_run"] == 6
    assert Path(resumed.artifacts["best_checkpoint"]).name == "best-epoch=00.ckpt"

    # Time over both attempts: the killed one trained 5 epochs, the resumed one only the last.
    after = _throughput_state(run_dir / "checkpoints" / "last.ckpt")
    # (last.ckpt is saved just before the end of fit, so the result's time is a little beyond it)
    assert resumed.metrics["train_time_s"] >= after["elapsed_s"] > before["elapsed_s"] > 0
    assert after["train_seconds"] > before["train_seconds"] > 0
    assert after["samples"] == 6 * 48  # every epoch's 48 training pairs, none counted twice
    assert resumed.metrics["samples_per_s"] == pytest.approx(after["samples"] / after["train_seconds"])

    fresh = run_training(tiny_config(model_dir, tmp_path / "fresh", **{"train.epochs": 2}), MemoryRecorder(), splits)
    rows = [
        {"id": id_, "job_id": 100 + id_, "stage": "train", "peft_method": method, "status": "SUCCEEDED",
         "metrics": result.metrics, "cell": {"peft.method": method}, "seed": 42,
         "per_item": _per_item("train", result.artifacts)}  # what the report stage reads for each run
        for id_, method, result in ((1, "lora", resumed), (2, "qlora", fresh))
    ]  # fmt: skip
    assert all(len(row["per_item"]["i2t_hit@1"]) == 24 for row in rows)
    build_report(rows, [], tmp_path / "report")
    table = json.loads((tmp_path / "report" / "report.json").read_text())["table"]
    recall = next(r for r in table if r["metric"] == "i2t_recall@1")
    # Paired over the validation images, not the one-seed fallback (which has no interval at all).
    assert recall["difference"]["over"] == "24 validation images (paired bootstrap)", recall
    time_row = next(r for r in table if r["metric"] == "train_time_s")
    assert time_row["cells"][0]["mean"] == pytest.approx(resumed.metrics["train_time_s"])
