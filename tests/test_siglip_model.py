"""Model loading and wrapping: LoRA targets, trainable parameters, 4-bit layers, the pooling head."""

from __future__ import annotations

import math
import re

import bitsandbytes as bnb
import pytest
import torch
from siglip_fixtures import build_tiny_siglip, tiny_config
from torch import nn

from worker.siglip.model import (
    LoadPlan,
    build_peft_siglip,
    count_parameters,
    load_base_model,
    lora_target_names,
    weight_memory_bytes,
)

LORA_PARAM = re.compile(
    r".*_model\.encoder\.layers\.\d+\.(self_attn\.[qkvo]\w*_proj|mlp\.fc[12])\.lora_[AB]\.default\.weight"
)
FP32 = LoadPlan(quantize=False, weights_dtype=torch.float32)
NF4 = LoadPlan(quantize=True, weights_dtype=torch.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture
def config(model_dir, tmp_path):
    return tiny_config(model_dir, tmp_path)


def _expected_lora_params(r: int, layers: int, towers: int, width: int = 64, ffn: int = 128) -> int:
    attention = 4 * (r * width + width * r)
    mlp = (r * width + ffn * r) + (r * ffn + width * r)
    return (attention + mlp) * layers * towers


def test_default_targets_are_the_encoder_projections_of_both_towers(config):
    model = load_base_model(config, FP32)
    names = lora_target_names(model, config.peft.target_modules, "both")
    assert len(names) == 2 * 2 * 6  # towers x layers x (q, k, v, out, fc1, fc2)
    assert not [n for n in names if n.startswith("vision_model.head")]
    vision = lora_target_names(model, config.peft.target_modules, "vision")
    assert vision and all(n.startswith("vision_model.encoder.") for n in vision)


def test_a_regex_that_reaches_the_pooling_head_is_refused(config):
    model = load_base_model(config, FP32)
    with pytest.raises(ValueError, match="pooling head"):
        lora_target_names(model, r".*(out_proj|fc1)", "both")
    with pytest.raises(ValueError, match="matches no Linear"):
        lora_target_names(model, r"nothing\.here", "both")


@pytest.mark.parametrize("plan", [FP32, NF4], ids=["lora", "qlora"])
def test_only_adapters_and_logit_scale_bias_train(config, plan):
    model = build_peft_siglip(config, plan)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    extras = [n for n in trainable if not LORA_PARAM.fullmatch(n)]
    assert sorted(extras) == ["base_model.model.logit_bias", "base_model.model.logit_scale"]
    count, _ = count_parameters(model)
    assert count == _expected_lora_params(config.peft.r, layers=2, towers=2) + 2


def test_infonce_keeps_scale_and_bias_frozen_and_one_tower_can_be_chosen(model_dir, tmp_path):
    config = tiny_config(model_dir, tmp_path, **{"train.loss": "infonce", "peft.towers": "text"})
    model = build_peft_siglip(config, FP32)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".text_model.encoder." in n and ".lora_" in n for n in trainable)
    assert count_parameters(model)[0] == _expected_lora_params(config.peft.r, layers=2, towers=1)


def test_qlora_quantizes_encoder_linears_and_leaves_the_pooling_head_alone(config):
    lora = load_base_model(config, FP32)
    qlora = load_base_model(config, NF4)
    modules = dict(qlora.named_modules())
    assert isinstance(modules["vision_model.encoder.layers.0.self_attn.q_proj"], bnb.nn.Linear4bit)
    assert isinstance(modules["text_model.encoder.layers.1.mlp.fc2"], bnb.nn.Linear4bit)
    head = [m for n, m in modules.items() if n.startswith("vision_model.head") and isinstance(m, nn.Linear)]
    assert head and not any(isinstance(m, bnb.nn.Linear4bit) for m in head)
    assert all(m.weight.dtype == torch.float32 for m in head)
    assert weight_memory_bytes(qlora) < 0.75 * weight_memory_bytes(lora)
    # Counting unpacks the 4-bit storage: both hold the same number of weights.
    assert count_parameters(qlora)[1] == count_parameters(lora)[1]


def test_frozen_weights_stay_in_the_compute_dtype_unless_upcast_is_asked(model_dir, tmp_path):
    bf16 = LoadPlan(quantize=True, weights_dtype=torch.bfloat16)
    kept = build_peft_siglip(tiny_config(model_dir, tmp_path), bf16)
    assert kept.get_base_model().vision_model.post_layernorm.weight.dtype == torch.bfloat16
    upcast = build_peft_siglip(tiny_config(model_dir, tmp_path, **{"peft.upcast_non_quantized": True}), bf16)
    assert upcast.get_base_model().vision_model.post_layernorm.weight.dtype == torch.float32
    for model in (kept, upcast):  # trainable tensors are fp32 either way
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_logit_scale_and_bias_start_from_siglip_init_or_the_configured_bias(model_dir, tmp_path):
    paper = build_peft_siglip(tiny_config(model_dir, tmp_path, **{"train.logit_bias_init": None}), FP32)
    base = paper.get_base_model()  # the fixture was saved with HF's untrained (0, 0)
    assert base.logit_scale.item() == pytest.approx(math.log(10.0))
    assert base.logit_bias.item() == pytest.approx(-10.0)
    biased = build_peft_siglip(tiny_config(model_dir, tmp_path, **{"train.logit_bias_init": -3.0}), FP32)
    assert biased.get_base_model().logit_bias.item() == pytest.approx(-3.0)


def test_gradient_checkpointing_is_a_switch(model_dir, tmp_path):
    on = build_peft_siglip(tiny_config(model_dir, tmp_path, **{"train.gradient_checkpointing": True}), NF4)
    off = build_peft_siglip(tiny_config(model_dir, tmp_path), NF4)
    assert on.get_base_model().is_activation_checkpointing
    assert not off.get_base_model().is_activation_checkpointing


def test_qlora_trains_after_a_no_grad_evaluation(config):
    """bitsandbytes repacks 4-bit weights for CPU inference in place; the loader turns that off."""
    model = build_peft_siglip(config, NF4)
    vision = model.get_base_model().vision_model
    pixels = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        vision(pixel_values=pixels)
    model.train()
    vision(pixel_values=pixels).pooler_output.sum().backward()
    first_layer_b = dict(model.named_parameters())[
        "base_model.model.vision_model.encoder.layers.0.self_attn.q_proj.lora_B.default.weight"
    ]
    assert first_layer_b.grad is not None and first_layer_b.grad.abs().sum() > 0


def test_a_gated_model_without_hf_token_names_the_host_whose_setting_it_is(monkeypatch):
    import socket

    from worker.config import load_config

    monkeypatch.delenv("HF_TOKEN", raising=False)
    config = load_config("medsiglip")
    with pytest.raises(RuntimeError, match="set HF_TOKEN") as refused:
        load_base_model(config, LoadPlan(quantize=False, weights_dtype=torch.float32))
    assert f"where this process runs ({socket.gethostname()}: a worker's own environment or .env" in str(refused.value)
