"""The Hugging Face output of a training run: plain peft + transformers load it and give the product's
embeddings; `export --merge` gives a SigLIP that AutoModel loads alone; the model card and run config."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from siglip_fixtures import CONDITIONS, build_tiny_siglip, fake_splits, tiny_config

from worker.config import load_config
from worker.recorder import MemoryRecorder
from worker.siglip.stage import run_training

EMBEDDING_TOLERANCE = 1e-5
MERGED_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="module", params=["lora", "qlora"])
def run(request, model_dir, tmp_path_factory) -> SimpleNamespace:
    """One short training run per method, and the product's own (unmerged) reload of its best checkpoint."""
    from worker.siglip.checkpoint import load_finetuned_siglip

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp(f"run-{request.param}")
    config = tiny_config(model_dir, run_dir, **{"peft.method": request.param, "train.epochs": 2})
    result = run_training(config, MemoryRecorder(), fake_splits({"train": 48, "val": 24}))
    product = load_finetuned_siglip(result.artifacts["best_checkpoint"], merge=False)
    images = fake_splits({"test": 6}, seed=3).split("test").images
    pixels = product.normalizer.from_uint8(images)
    input_ids = product.tokenizer(CONDITIONS, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    return SimpleNamespace(
        method=request.param, config=config, result=result, pixels=pixels, input_ids=input_ids,
        image_emb=product.encode_images(images), text_emb=product.encode_texts(CONDITIONS),
    )  # fmt: skip


def _plain_embeddings(model, pixels, input_ids) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(input_ids=input_ids).pooler_output
    return torch.nn.functional.normalize(image.float(), dim=-1), torch.nn.functional.normalize(text.float(), dim=-1)


def test_adapter_loads_with_plain_peft_and_transformers_and_matches_the_product(run, model_dir):
    # Only peft, transformers and bitsandbytes from here on: what a user of the adapter would write.
    from peft import PeftModel
    from transformers import AutoModel, BitsAndBytesConfig

    adapter = Path(run.result.artifacts["hf_output"]) / "siglip"
    kwargs = {}
    if run.method == "qlora":
        kwargs = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=["vision_model.head"],
            ),
            "dtype": torch.float32,
            "device_map": {"": "cpu"},
        }  # fmt: skip
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(model_dir, **kwargs), adapter).eval()
    if run.method == "qlora":
        import bitsandbytes as bnb

        for module in model.modules():  # the model card's note: no bf16 repacking on AVX512-BF16 CPUs
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False
    image, text = _plain_embeddings(model, run.pixels, run.input_ids)

    assert torch.allclose(image, run.image_emb, atol=EMBEDDING_TOLERANCE, rtol=0)
    assert torch.allclose(text, run.text_emb, atol=EMBEDDING_TOLERANCE, rtol=0)
    # The adapter is trained: the base model alone gives other embeddings.
    base_image, _ = _plain_embeddings(AutoModel.from_pretrained(model_dir, **kwargs).eval(), run.pixels, run.input_ids)
    assert (base_image - run.image_emb).abs().max() > 100 * EMBEDDING_TOLERANCE


def test_export_merge_loads_with_automodel_alone(run):
    from transformers import AutoModel

    from worker.export.stage import export

    result = export(run.config, MemoryRecorder(), checkpoint=run.result.artifacts["best_checkpoint"], merge=True)
    merged = AutoModel.from_pretrained(result.artifacts["merged_siglip"]).eval()
    image, text = _plain_embeddings(merged, run.pixels, run.input_ids)

    # LoRA: the merged fp32 weights against the product's separate adapters. QLoRA merges into the fp32 base,
    # so it differs from the 4-bit model by the quantization error: checked against the unquantized adapter.
    if run.method == "lora":
        assert torch.allclose(image, run.image_emb, atol=MERGED_TOLERANCE, rtol=0)
        assert torch.allclose(text, run.text_emb, atol=MERGED_TOLERANCE, rtol=0)
    else:
        from worker.siglip.checkpoint import load_finetuned_siglip

        fp32 = load_finetuned_siglip(run.result.artifacts["best_checkpoint"], merge=True)
        reference = torch.nn.functional.normalize(fp32.vision_features(run.pixels)[0].float(), dim=-1)
        assert torch.allclose(image, reference, atol=MERGED_TOLERANCE, rtol=0)
    trained = torch.load(run.result.artifacts["best_checkpoint"], weights_only=True)["state_dict"]
    assert merged.logit_bias.item() == pytest.approx(trained["model.base_model.model.logit_bias"].item())
    assert result.metrics["files"] >= 8


def test_output_holds_card_and_run_config(run):
    out = Path(run.result.artifacts["hf_output"])
    assert out.parent == Path(run.result.artifacts["checkpoint_dir"]).parent  # next to the checkpoints
    assert {"README.md", "run_config.yaml", "siglip"} <= {p.name for p in out.iterdir()}
    assert (out / "siglip" / "adapter_model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "Not for clinical use" in card
    assert f"| method | {run.method} |" in card
    assert f"| rank r / alpha | {run.config.peft.r} / {run.config.peft.alpha}" in card
    assert f"| val_loss | {run.result.metrics['val_loss']:.4g} |" in card
    assert ("4-bit NF4" in card) == (run.method == "qlora")
    reloaded = load_config(None, config_path=out / "run_config.yaml")
    assert reloaded.peft == run.config.peft and reloaded.train == run.config.train
    assert yaml.safe_load(card.split("---")[1])["base_model"] == run.config.model.siglip
