"""train-full's inputs at MIMIC-CXR size: image features in a file read a batch at a time, token ids in one
array. Each against the in-memory computation it replaces, on the smoke data and the tiny models."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from worker.base_models import base_dir
from worker.generation import datamodule
from worker.generation.datamodule import ReportDataset, TargetCollator, TokenRows, encode_targets
from worker.generation.encoder import image_features
from worker.generation.features import (
    FeatureRows,
    features_key,
    features_path,
    load_or_write_features,
    write_features,
)
from worker.generation.model import feature_statistics
from worker.generation.studies import select_studies


@pytest.fixture(scope="module")
def siglip(smoke_config, smoke_prepared):
    from worker.siglip.checkpoint import load_base_siglip

    return load_base_siglip(smoke_config)


@pytest.fixture(scope="module")
def val_images(smoke_prepared):
    val = smoke_prepared.split("val")
    return select_studies(val).images(val)


@pytest.mark.parametrize("kind", ["pooled", "patches"])
def test_the_features_file_holds_the_in_memory_features(smoke_config, siglip, val_images, tmp_path, kind):
    gen = smoke_config.generation.model_copy(update={"features": kind, "eval_batch_size": 7})  # a short last batch
    path = tmp_path / "val.npy"
    write_features(siglip, val_images, gen, path, "val")
    expected = image_features(siglip, val_images, gen)
    written = np.load(path)
    assert written.dtype == np.float32 and written.shape == tuple(expected.shape)
    assert np.array_equal(written, expected.numpy())
    rows = FeatureRows(path)
    assert torch.equal(rows[[5, 0, 3]], expected[[5, 0, 3]]) and torch.equal(rows[2], expected[2])
    assert torch.equal(torch.cat(list(rows.chunks(4))), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["val.npy"]  # no temporary file left


def test_a_features_file_is_read_not_computed_again(smoke_config, siglip, val_images, tmp_path):
    gen = smoke_config.generation
    path = tmp_path / "val.npy"
    calls = []

    def encoder():
        calls.append(1)
        return siglip

    first = load_or_write_features(path, val_images, gen, encoder, "val")
    again = load_or_write_features(path, val_images, gen, encoder, "val")
    assert len(calls) == 1 and torch.equal(first[:], again[:])
    # A file of another length (not one row per study) is computed again.
    load_or_write_features(path, val_images[:5], gen, encoder, "val")
    assert len(calls) == 2 and len(FeatureRows(path)) == 5


def test_a_failure_while_writing_leaves_no_file(smoke_config, siglip, val_images, tmp_path, monkeypatch):
    from worker.generation import features

    def failing(*args, **kwargs):
        yield torch.zeros(2, 4)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(features, "feature_batches", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        write_features(siglip, val_images, smoke_config.generation, tmp_path / "val.npy", "val")
    assert list(tmp_path.iterdir()) == []


def test_the_file_name_changes_with_everything_the_features_depend_on(smoke_config, tmp_path):
    gen = smoke_config.generation
    patches = gen.model_copy(update={"features": "patches"})
    base = features_key("a" * 64, "val-cache.npy", ["1.png", "2.png"], gen, "cpu")
    variants = [
        features_key("b" * 64, "val-cache.npy", ["1.png", "2.png"], gen, "cpu"),  # another SigLIP checkpoint
        features_key("a" * 64, "val-other.npy", ["1.png", "2.png"], gen, "cpu"),
        features_key("a" * 64, "val-cache.npy", ["2.png", "1.png"], gen, "cpu"),
        features_key("a" * 64, "val-cache.npy", ["1.png", "2.png"], gen, "cuda"),
        features_key("a" * 64, "val-cache.npy", ["1.png", "2.png"], patches, "cpu"),
        features_key("a" * 64, "val-cache.npy", ["1.png", "2.png"], patches.model_copy(update={"prefix_tokens": 3}),
                     "cpu"),
    ]
    names = {features_path(tmp_path, "val", key) for key in [base, *variants]}
    assert len(names) == 1 + len(variants)
    # Settings that do not change the values keep the name (the region count only matters for patches).
    regions = gen.model_copy(update={"prefix_tokens": 3})
    same = features_key("a" * 64, "val-cache.npy", ["1.png", "2.png"], regions, "cpu")
    assert features_path(tmp_path, "val", same) == features_path(tmp_path, "val", base)


def test_feature_rows_pickle_without_their_values(siglip, smoke_config, val_images, tmp_path):
    path = tmp_path / "val.npy"
    write_features(siglip, val_images, smoke_config.generation, path, "val")
    rows = FeatureRows(path)
    rows[0]
    copy = pickle.loads(pickle.dumps(rows))
    assert len(pickle.dumps(rows)) < 1000 and torch.equal(copy[[1, 2]], rows[[1, 2]])


def test_statistics_over_chunks_equal_those_of_the_whole_tensor():
    torch.manual_seed(0)
    features = torch.randn(103, 6, 5) * 3 + 40  # large mean, small spread: what SigLIP embeddings look like
    mean, std = feature_statistics(features[i : i + 10] for i in range(0, 103, 10))
    flat = features.reshape(-1, 5).double()
    assert torch.allclose(mean.double(), flat.mean(0), rtol=1e-6)
    assert torch.allclose(std.double(), flat.std(0), rtol=1e-6)


@pytest.fixture(scope="module")
def tokenizer(smoke_prepared, smoke_config):
    return AutoTokenizer.from_pretrained(base_dir(smoke_config, "biogpt"))


def test_targets_are_the_tokenizers_ids_in_one_array(smoke_prepared, tokenizer, monkeypatch):
    texts = select_studies(smoke_prepared.split("train")).texts
    monkeypatch.setattr(datamodule, "ENCODE_BATCH", 7)  # several batches and a short last one
    eos = tokenizer.eos_token_id
    targets = encode_targets(tokenizer, texts, 12, eos)
    expected = [[*ids, eos] for ids in tokenizer(texts, truncation=True, max_length=11)["input_ids"]]
    assert isinstance(targets, TokenRows) and targets.ids.dtype == np.int32
    assert [row.tolist() for row in targets] == expected and len(targets) == len(texts)
    assert targets[-1].tolist() == expected[-1]
    with pytest.raises(IndexError):
        targets[len(texts)]
    assert len(encode_targets(tokenizer, [], 12, eos)) == 0


def test_a_features_file_and_packed_targets_give_the_same_batches_as_in_memory(
    smoke_config, siglip, smoke_prepared, tokenizer, tmp_path
):
    val = smoke_prepared.split("val")
    studies = select_studies(val)
    gen = smoke_config.generation
    path = tmp_path / "val.npy"
    write_features(siglip, studies.images(val), gen, path, "val")
    eos = tokenizer.eos_token_id
    packed = encode_targets(tokenizer, studies.texts, gen.max_target_tokens, eos)
    lists = [row.tolist() for row in packed]
    collate = TargetCollator(tokenizer.pad_token_id, 1)

    def batches(dataset):
        torch.manual_seed(3)
        return list(DataLoader(dataset, batch_size=5, shuffle=True, collate_fn=collate))

    in_memory = batches(ReportDataset(image_features(siglip, studies.images(val), gen), lists))
    from_file = batches(ReportDataset(FeatureRows(path), packed))
    assert len(in_memory) == len(from_file)
    for a, b in zip(in_memory, from_file, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
