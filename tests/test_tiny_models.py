"""The tiny fixtures load by path through the Auto classes, like hub checkpoints, and run a forward pass."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.base_models import base_dir
from worker.config import ConfigError, RunConfig
from worker.fixtures.tiny_models import SPEC_FILE, ensure_tiny_models


@pytest.fixture(scope="module")
def built(smoke_config: RunConfig) -> RunConfig:
    ensure_tiny_models(smoke_config)
    return smoke_config


def test_siglip_loads_with_auto_classes_and_runs(built: RunConfig) -> None:
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer

    path = base_dir(built, "siglip")
    model = AutoModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == "SiglipModel"
    assert type(tokenizer).__name__ == "SiglipTokenizer"
    assert type(processor).__name__ == "SiglipProcessor"
    assert model.config.vision_config.num_hidden_layers == 2
    assert model.config.vision_config.image_size == built.data.image_size
    assert model.config.text_config.max_position_embeddings == built.train.max_text_length
    assert model.config.text_config.vocab_size == tokenizer.vocab_size
    assert model.logit_scale.item() == pytest.approx(math.log(10.0))
    assert model.logit_bias.item() == pytest.approx(-10.0)
    # The trained vocabulary keeps the report words whole rather than spelling them out.
    assert tokenizer.tokenize("no acute cardiopulmonary abnormality") == [
        "▁no", "▁acute", "▁cardiopulmonary", "▁abnormality"
    ]  # fmt: skip
    size = built.data.image_size
    images = [np.full((size, size, 3), 128, np.uint8), np.zeros((size + 10, size, 3), np.uint8)]
    assert image_processor(images, return_tensors="pt")["pixel_values"].shape == (2, 3, size, size)
    batch = processor(
        text=["no acute cardiopulmonary abnormality.", "cardiomegaly."],
        images=images,
        padding="max_length",
        max_length=built.train.max_text_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model(**batch)
    assert out.logits_per_image.shape == (2, 2)
    assert torch.isfinite(out.logits_per_image).all()


def test_biogpt_loads_with_auto_classes_and_runs(built: RunConfig) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = base_dir(built, "biogpt")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "BioGptForCausalLM"
    assert type(tokenizer).__name__ == "BioGptTokenizer"
    assert model.config.num_hidden_layers == 2
    text = "left pleural effusion."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    batch = tokenizer([text, "no acute cardiopulmonary abnormality."], padding=True, return_tensors="pt")
    out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape[-1] == model.config.vocab_size == len(tokenizer)
    assert torch.isfinite(out.loss)
    generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] <= batch["input_ids"].shape[1] + 3


def test_second_call_reuses_the_checkpoints(built: RunConfig) -> None:
    weights = [Path(base_dir(built, field)) / "model.safetensors" for field in ("siglip", "biogpt")]
    stamps = [p.stat().st_mtime_ns for p in weights]
    ensure_tiny_models(built)
    assert [p.stat().st_mtime_ns for p in weights] == stamps
    assert all((p.parent / SPEC_FILE).is_file() for p in weights)


def test_hub_id_with_build_flag_is_a_clear_error(smoke_config: RunConfig) -> None:
    config = smoke_config.model_copy(
        update={"model": smoke_config.model.model_copy(update={"siglip": "google/siglip-base-patch16-224"})}
    )
    with pytest.raises(ConfigError, match=r"model\.siglip"):
        ensure_tiny_models(config)


def test_each_build_has_its_own_folder_and_every_seed_shares_one(smoke_config: RunConfig) -> None:
    from worker.fixtures.spec import fixture_dir

    other_seed = smoke_config.model_copy(update={"seed": 7})
    other_size = smoke_config.model_copy(update={"data": smoke_config.data.model_copy(update={"image_size": 32})})
    assert fixture_dir(other_seed, "siglip") == fixture_dir(smoke_config, "siglip")  # the seed varies training only
    assert fixture_dir(other_size, "siglip") != fixture_dir(smoke_config, "siglip")
    assert fixture_dir(other_size, "biogpt") == fixture_dir(smoke_config, "biogpt")  # BioGPT sees no image size


def test_two_jobs_building_at_once_both_end_with_one_complete_build(tmp_path: Path) -> None:
    import threading

    from worker.fixtures.tiny_models import _build_atomically

    target = tmp_path / "models" / "tiny-siglip" / "build-x"
    target.parent.mkdir(parents=True)
    spec = {"kind": "siglip", "version": 0}
    both_building = threading.Barrier(2)
    errors: list[BaseException] = []

    def build(directory: Path, _: dict) -> None:
        (directory / "model.safetensors").write_text(threading.current_thread().name)
        both_building.wait(timeout=10)  # neither has renamed yet: a real race

    def job() -> None:
        try:
            _build_atomically(target, spec, build)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job, name=f"job-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (target / "model.safetensors").read_text() in {"job-0", "job-1"}
    assert json.loads((target / SPEC_FILE).read_text()) == spec
    assert sorted(p.name for p in target.parent.iterdir()) == ["build-x"]  # no staging folder left behind
    written = (target / "model.safetensors").stat().st_mtime_ns
    _build_atomically(target, spec, build_never)  # a later job finds it built and never replaces it
    assert (target / "model.safetensors").stat().st_mtime_ns == written


def build_never(directory: Path, spec: dict) -> None:
    (directory / "model.safetensors").write_text("a rewrite")
