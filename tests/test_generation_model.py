"""The captioner on the tiny BioGPT: embedding scale, loss masking, generation, tuning modes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from worker.base_models import base_dir
from worker.config import RunConfig
from worker.generation.datamodule import TargetCollator, encode_targets
from worker.generation.generate import generate_reports
from worker.generation.model import IGNORE_INDEX, build_captioner, pool_patches

FEATURE_DIM = 12
TEXTS = ["no acute cardiopulmonary abnormality.", "right pleural effusion."]


@pytest.fixture(scope="module")
def tiny_biogpt(smoke_config: RunConfig):
    from worker.fixtures.tiny_models import ensure_tiny_models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only add sync overhead on a shared CPU
    ensure_tiny_models(smoke_config)
    yield AutoTokenizer.from_pretrained(base_dir(smoke_config, "biogpt"))
    torch.set_num_threads(threads)


def make(config: RunConfig, tokenizer, **generation):
    config = config.model_copy(update={"generation": config.generation.model_copy(update=generation)})
    torch.manual_seed(0)
    return config, build_captioner(config, tokenizer, FEATURE_DIM)


def batch(captioner, tokenizer, config):
    targets = encode_targets(tokenizer, TEXTS, config.generation.max_target_tokens, captioner.eos_id)
    collate = TargetCollator(captioner.pad_id, len(captioner.start_ids))
    features = torch.randn(len(TEXTS), FEATURE_DIM)
    return collate([(features[i], t, i) for i, t in enumerate(targets)])


def test_embed_matches_what_biogpt_feeds_itself(smoke_config, tiny_biogpt):
    _, captioner = make(smoke_config, tiny_biogpt)
    lm = captioner.causal_lm
    ids = torch.tensor([tiny_biogpt(TEXTS[0])["input_ids"]])
    # transformers 5.x: get_input_embeddings() applies BioGPT's sqrt(d_model) scale itself ...
    scale = lm.config.hidden_size**0.5 if lm.config.scale_embedding else 1.0
    assert torch.allclose(captioner.embed(ids), lm.get_input_embeddings().weight[ids] * scale)
    # ... so inputs_embeds built from it reproduce the input_ids path exactly.
    with torch.no_grad():
        assert torch.allclose(lm(input_ids=ids).logits, lm(inputs_embeds=captioner.embed(ids)).logits, atol=1e-5)


def test_prefix_starts_at_token_embedding_magnitude(smoke_config, tiny_biogpt):
    _, captioner = make(smoke_config, tiny_biogpt)
    with torch.no_grad():
        prefix_norm = captioner.prefix(torch.randn(3, FEATURE_DIM)).norm(dim=-1).mean()
        vocab = torch.arange(captioner.causal_lm.config.vocab_size)
        token_norm = captioner.embed(vocab).norm(dim=-1).mean()
    assert prefix_norm == pytest.approx(float(token_norm), rel=0.05)


def test_labels_mask_start_tokens_padding_and_prefix(smoke_config, tiny_biogpt):
    config, captioner = make(smoke_config, tiny_biogpt)
    b = batch(captioner, tiny_biogpt, config)
    assert (b["labels"][:, : len(captioner.start_ids)] == IGNORE_INDEX).all()
    assert (b["labels"][b["attention_mask"] == 0] == IGNORE_INDEX).all()
    lengths = b["attention_mask"].sum(1)
    assert (b["input_ids"][torch.arange(2), lengths - 1] == captioner.eos_id).all()
    # The loss is the cross-entropy of the text tokens only, each predicted from the position before it.
    k = config.generation.prefix_tokens
    with torch.no_grad():
        loss = captioner(b["features"], b["input_ids"], b["attention_mask"], b["labels"])
        inputs = torch.cat([captioner.prefix(b["features"]), captioner.embed(b["input_ids"])], 1)
        mask = torch.cat([torch.ones(2, k, dtype=torch.long), b["attention_mask"]], 1)
        logits = captioner.causal_lm(inputs_embeds=inputs, attention_mask=mask).logits[:, k:]
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), b["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def fit_briefly(captioner, b, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in captioner.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = captioner(b["features"], b["input_ids"], b["attention_mask"], b["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def test_generate_returns_only_new_tokens_like_a_manual_greedy_loop(smoke_config, tiny_biogpt):
    config, captioner = make(
        smoke_config, tiny_biogpt, biogpt_tuning="full", decoding="greedy", no_repeat_ngram_size=0, max_new_tokens=8
    )
    b = batch(captioner, tiny_biogpt, config)
    fit_briefly(captioner, b, steps=15)  # so that the model writes words before it stops
    captioner.eval()
    texts = generate_reports(captioner, b["features"], tiny_biogpt, config.generation, batch_size=2)
    expected = []
    with torch.no_grad():
        for row in b["features"]:
            embeds = captioner.prompt(row[None])
            ids: list[int] = []
            for _ in range(8):
                next_id = int(captioner.causal_lm(inputs_embeds=embeds).logits[0, -1].argmax())
                if next_id == captioner.eos_id:
                    break
                ids.append(next_id)
                embeds = torch.cat([embeds, captioner.embed(torch.tensor([[next_id]]))], 1)
            expected.append(tiny_biogpt.decode(ids, skip_special_tokens=True).strip())
    assert texts == expected
    assert all(texts)


def test_beam_search_runs_batched(smoke_config, tiny_biogpt):
    config, captioner = make(smoke_config, tiny_biogpt, biogpt_tuning="full", decoding="beam", num_beams=3)
    b = batch(captioner, tiny_biogpt, config)
    fit_briefly(captioner, b, steps=15)
    texts = generate_reports(captioner, b["features"], tiny_biogpt, config.generation, batch_size=2)
    assert len(texts) == 2 and all(texts)
    assert all(len(tiny_biogpt(t)["input_ids"]) <= config.generation.max_new_tokens + 1 for t in texts)


@pytest.mark.parametrize(
    ("tuning", "trainable_prefixes", "quantized"),
    [
        ("lora", ("projector.", "lm.base_model.model.biogpt.layers."), False),
        ("qlora", ("projector.", "lm.base_model.model.biogpt.layers."), True),
        ("full", ("projector.", "lm."), False),
    ],
)
def test_tuning_modes_train_what_they_should(smoke_config, tiny_biogpt, tuning, trainable_prefixes, quantized):
    import bitsandbytes as bnb

    config, captioner = make(smoke_config, tiny_biogpt, biogpt_tuning=tuning)
    trainable = [n for n, p in captioner.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(trainable_prefixes) for n in trainable)
    lm_trainable = [n for n in trainable if n.startswith("lm.")]
    if tuning == "full":
        assert len(lm_trainable) == len([n for n, _ in captioner.lm.named_parameters()])
    else:
        assert lm_trainable and all("lora_" in n for n in lm_trainable)
    has_4bit = any(isinstance(m, bnb.nn.Linear4bit) for m in captioner.modules())
    assert has_4bit == quantized
    # A few steps on one batch lower its loss: gradients reach what is trained.
    losses = fit_briefly(captioner, batch(captioner, tiny_biogpt, config), steps=5)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_patch_features_pool_to_k_prefixes(smoke_config, tiny_biogpt, kind):
    _, captioner = make(smoke_config, tiny_biogpt, features="patches", projector=kind, prefix_tokens=3)
    prefix = captioner.prefix(torch.randn(2, 16, FEATURE_DIM))
    assert prefix.shape == (2, 3, captioner.causal_lm.config.hidden_size)
    with pytest.raises(ValueError, match=r"\[N, P, D\]"):
        captioner.prefix(torch.randn(2, FEATURE_DIM))


@pytest.mark.parametrize("tuning", ["lora", "qlora", "full"])
def test_checkpoint_reloads_the_trained_captioner(smoke_config, tiny_biogpt, tmp_path, tuning):
    from worker.generation.checkpoint import load_report_model
    from worker.generation.module import ReportGenModule

    config, captioner = make(smoke_config, tiny_biogpt, biogpt_tuning=tuning)
    b = batch(captioner, tiny_biogpt, config)
    captioner.projector.fit_normalization(b["features"] * 3 + 1)
    module = ReportGenModule(config, captioner, "siglip.ckpt", FEATURE_DIM)  # fingerprints the untrained base
    fit_briefly(captioner, b, steps=3)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert all(k.startswith("captioner.") for k in checkpoint["state_dict"])
    if tuning != "full":  # only the projector and the adapters are stored
        assert all("lora_" in k or k.startswith("captioner.projector.") for k in checkpoint["state_dict"])
    path = tmp_path / "report.ckpt"
    torch.save(checkpoint, path)

    loaded = load_report_model(str(path), smoke_config)
    assert loaded.siglip_checkpoint == "siglip.ckpt"
    assert loaded.config.generation.biogpt_tuning == tuning
    captioner.eval()
    with torch.no_grad():
        expected = captioner(b["features"], b["input_ids"], b["attention_mask"], b["labels"])
        reloaded = loaded.captioner(b["features"], b["input_ids"], b["attention_mask"], b["labels"])
    assert float(reloaded) == pytest.approx(float(expected), rel=1e-5)


def test_pool_patches_averages_quadrants_of_a_square_grid_else_raster_runs():
    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid, row-major
    assert pool_patches(grid, 4).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert pool_patches(grid, 2).flatten().tolist() == [3.5, 11.5]  # not square: two runs of 8
    assert pool_patches(grid, 16) is grid
