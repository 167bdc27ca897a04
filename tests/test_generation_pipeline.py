"""train-full -> evaluate -> qualitative on the smoke preset, end to end (one trained model per module)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
from PIL import Image

from worker.base_models import base_dir
from worker.config import RunConfig
from worker.generation.studies import select_studies
from worker.recorder import MemoryRecorder

pytestmark = pytest.mark.slow

TRAIN_FIELDS = (
    "train_loss", "val_loss", "initial_val_loss", "train_time_s", "samples_per_s", "peak_gpu_mem_mb",
    "peak_gpu_reserved_mb", "peak_ram_mb", "trainable_params", "total_params", "epochs_run", "best_checkpoint",
)
UNIT_METRICS = (
    "bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "meteor",
    "coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4", "coco_meteor", "coco_rougeL",
)


@pytest.fixture(scope="module")
def trained(smoke_config: RunConfig, smoke_prepared) -> SimpleNamespace:
    from worker.generation.stage import train_full
    from worker.siglip.stage import train_siglip

    # A short SigLIP run is enough: the generator only needs image features that differ between studies.
    siglip_config = smoke_config.model_copy(update={"train": smoke_config.train.model_copy(update={"epochs": 2})})
    siglip = train_siglip(siglip_config, MemoryRecorder())
    recorder = MemoryRecorder()
    result = train_full(smoke_config, recorder, siglip_checkpoint=siglip.metrics["best_checkpoint"])
    return SimpleNamespace(result=result, recorder=recorder, siglip_checkpoint=siglip.metrics["best_checkpoint"])


@pytest.fixture(scope="module")
def evaluated(smoke_config: RunConfig, trained):
    from worker.generation.evaluate import evaluate

    return evaluate(smoke_config, MemoryRecorder(), checkpoint=trained.result.metrics["best_checkpoint"])


def test_train_full_lowers_validation_loss(trained):
    metrics = trained.result.metrics
    assert set(TRAIN_FIELDS) <= set(metrics)
    assert metrics["val_loss"] < 0.5 * metrics["initial_val_loss"]
    assert trained.recorder.series("val_loss")[-1] < trained.recorder.series("val_loss")[0]
    assert 0 < metrics["trainable_params"] <= metrics["total_params"]
    assert metrics["epochs_run"] >= 1 and metrics["samples_per_s"] > 0
    assert Path(metrics["best_checkpoint"]).is_file()


def test_train_full_kept_each_splits_features_in_a_file_keyed_by_its_siglip_checkpoint(
    smoke_config, smoke_prepared, trained
):
    """The features train-full read a batch at a time are those its SigLIP computes in memory, in a file of
    the prepared data's folder named by the checkpoint's bytes (another checkpoint, another file)."""
    import numpy as np

    from worker.generation.encoder import image_features, load_siglip
    from worker.generation.features import features_key, features_path, file_digest

    siglip = load_siglip(trained.siglip_checkpoint, "cpu")
    gen = smoke_config.generation
    folder = Path(smoke_prepared.artifacts["prepared_dir"]) / "features"
    for name in ("train", "val"):
        split = smoke_prepared.split(name)
        studies = select_studies(split)
        cache = Path(smoke_prepared.artifacts[f"cache_{name}"]).name
        filenames = [split.filenames[row] for row in studies.rows]
        key = features_key(file_digest(trained.siglip_checkpoint), cache, filenames, gen, "cpu")
        written = np.load(features_path(folder, name, key))
        assert np.array_equal(written, image_features(siglip, studies.images(split), gen).numpy())
        other = features_key("0" * 64, cache, filenames, gen, "cpu")
        assert not features_path(folder, name, other).exists()


def test_evaluate_returns_every_metric_in_range(evaluated):
    metrics = evaluated.metrics
    for name in UNIT_METRICS:
        assert 0.0 <= metrics[name] <= 1.0, name
    assert 0.0 <= metrics["coco_cider"] <= 10.0
    for name in ("cosine_generated", "cosine_reference"):
        assert -1.0 <= metrics[name] <= 1.0, name
    assert metrics["generation_time_s"] > 0 and metrics["reports_per_s"] > 0
    # Training on the synthetic reports must give more than chance overlap.
    assert metrics["bleu1"] > 0.2 and metrics["rougeL"] > 0.2


def test_predictions_file_has_one_line_per_test_study(evaluated, smoke_prepared):
    lines = [json.loads(line) for line in Path(evaluated.artifacts["predictions"]).read_text().splitlines()]
    studies = select_studies(smoke_prepared.split("test"))
    assert [row["uid"] for row in lines] == studies.study_ids
    assert evaluated.metrics["num_samples"] == len(studies)
    assert [row["reference"] for row in lines] == studies.texts
    generated = [row["generated"] for row in lines]
    assert all(text.strip() for text in generated)
    assert len(set(generated)) > 1
    for row in lines:
        assert 0.0 <= row["bleu4"] <= 1.0 and 0.0 <= row["rougeL"] <= 1.0
    mean_rouge = sum(row["rougeL"] for row in lines) / len(lines)
    assert math.isclose(mean_rouge, evaluated.metrics["rougeL"], rel_tol=1e-6)


def test_evaluate_under_the_r2gen_protocol_scores_r2gen_cleaned_findings(smoke_config, trained):
    from worker.data.cleaning import r2gen_tokens_text
    from worker.generation.evaluate import evaluate
    from worker.generation.stage import train_full

    config = smoke_config.model_copy(update={
        "data": smoke_config.data.model_copy(update={"target": "findings"}),
        "eval": smoke_config.eval.model_copy(update={"protocol": "r2gen"}),
        "generation": smoke_config.generation.model_copy(update={"epochs": 2}),
    })  # fmt: skip
    # A generator of findings (the split and the SigLIP are the impression generator's): the evaluation scores
    # the section its checkpoint was trained to write.
    findings = train_full(config, MemoryRecorder(), siglip_checkpoint=trained.siglip_checkpoint)
    result = evaluate(config, MemoryRecorder(), checkpoint=findings.metrics["best_checkpoint"])
    lines = [json.loads(line) for line in Path(result.artifacts["predictions"]).read_text().splitlines()]
    references = [row["reference"] for row in lines]
    # The references are the findings in R2Gen's form (cleaning them again changes nothing) ...
    assert all(ref.endswith(" .") and ref == r2gen_tokens_text(ref) for ref in references)
    assert any("xxxx" in ref for ref in references)
    # ... and the per-study scores are computed on the cleaned texts.
    assert all(0.0 <= row["bleu4"] <= 1.0 and 0.0 <= row["rougeL"] <= 1.0 for row in lines)
    for name in UNIT_METRICS:
        assert 0.0 <= result.metrics[name] <= 1.0, name
    # The baselines are scored under the same protocol: their texts are cleaned the same way before scoring.
    from worker.textmetrics import all_metrics, sentence_rouge_l

    for row in lines:
        for name in ("template", "nn_finetuned", "nn_base"):
            cleaned = r2gen_tokens_text(row[f"{name}_text"])
            assert row[f"{name}_rougeL"] == pytest.approx(sentence_rouge_l(row["reference"], cleaned)), name
    assert 0.0 <= result.metrics["template_coco_bleu4"] <= 1.0
    # The other protocol is native here: the same texts scored by this project's tokenization, under its name.
    native = all_metrics(references, [row["template_text"] for row in lines],
                         nltk_data_dir=config.var_path("nltk_data"), protocol="native")  # fmt: skip
    assert result.metrics["native_template_coco_bleu4"] == pytest.approx(native["coco_bleu4"])
    assert all(f"native_{key}" in lines[0] for key in ("bleu4", "rougeL", "nn_base_rougeL"))
    assert not any(key.startswith("r2gen_") for key in result.metrics)


def test_the_r2gen_protocol_is_refused_for_a_generator_of_impressions_in_one_line(smoke_config, trained):
    from worker.config import ConfigError
    from worker.generation.evaluate import evaluate

    config = smoke_config.model_copy(update={
        "data": smoke_config.data.model_copy(update={"target": "findings"}),
        "eval": smoke_config.eval.model_copy(update={"protocol": "r2gen"}),
    })  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        evaluate(config, MemoryRecorder(), checkpoint=trained.result.metrics["best_checkpoint"])
    assert "\n" not in str(refused.value) and "trained on the impression" in str(refused.value)


def test_the_training_split_scored_on_purpose_counts_every_study_as_seen_in_training(smoke_config, trained):
    from worker.generation.predict import predict

    predictions = predict(smoke_config, trained.result.metrics["best_checkpoint"], "train")
    studies = set(predictions.studies.study_ids)
    assert studies and predictions.train_overlap == len(studies) and predictions.train_excluded == 0


def test_qualitative_writes_html_and_png(smoke_config, trained):
    from worker.generation.qualitative import GRID_DPI, GRID_WIDTH_IN, ROW_HEIGHT_IN, qualitative

    result = qualitative(smoke_config, MemoryRecorder(), checkpoint=trained.result.metrics["best_checkpoint"],
                         num_samples=5)
    html = Path(result.artifacts["html"]).read_text()
    assert html.count("data:image/png;base64,") == 5
    for kind in ("best", "worst", "random"):
        assert f'class="kind {kind}"' in html
    # The page says which split it shows and that none of its studies trained the model.
    assert "the checkpoint&#39;s split seed 42" in html and "studies the model trained on among them: 0." in html
    assert result.metrics["train_overlap"] == 0
    with Image.open(result.artifacts["png"]) as png:
        assert png.format == "PNG"
        assert png.size == (round(GRID_WIDTH_IN * GRID_DPI), round(5 * ROW_HEIGHT_IN * GRID_DPI))


def test_evaluate_refuses_a_checkpoint_of_another_stage(smoke_config, trained):
    from worker.generation.evaluate import evaluate

    with pytest.raises(ValueError, match="not a train-full checkpoint"):
        evaluate(smoke_config, MemoryRecorder(), checkpoint=trained.siglip_checkpoint)


def test_evaluate_without_java_fails_before_generating(smoke_config, trained, monkeypatch):
    from worker.generation import evaluate as evaluate_module
    from worker.textmetrics import SystemDependencyMissing, deps

    monkeypatch.setattr(deps.shutil, "which", lambda name: None)
    monkeypatch.setattr(deps, "_bundled_java", lambda: None)
    monkeypatch.setattr(evaluate_module, "predict", lambda *a, **k: pytest.fail("generated before the check"))
    with pytest.raises(SystemDependencyMissing, match="default-jre-headless"):
        evaluate_module.evaluate(smoke_config, MemoryRecorder(), checkpoint=trained.result.metrics["best_checkpoint"])


def _brute_force_nearest(siglip, test_images, train_images, train_texts) -> list[set[str]]:
    """Per test image, every training text whose image is the most similar (to 1e-6), by a plain loop."""
    test, train = siglip.encode_images(test_images).tolist(), siglip.encode_images(train_images).tolist()
    found = []
    for query in test:
        cosines = [sum(a * b for a, b in zip(query, item, strict=True)) for item in train]
        top = max(cosines)
        found.append({text for text, c in zip(train_texts, cosines, strict=True) if c >= top - 1e-6})
    return found


def test_evaluate_scores_the_baselines_like_the_model(smoke_config, smoke_prepared, evaluated, trained):
    import torch
    from transformers import SiglipModel

    from worker.siglip.checkpoint import FinetunedSiglip, load_finetuned_siglip
    from worker.textmetrics import all_metrics

    lines = [json.loads(line) for line in Path(evaluated.artifacts["predictions"]).read_text().splitlines()]
    train = smoke_prepared.split("train")
    train_studies = select_studies(train)
    test_studies = select_studies(smoke_prepared.split("test"))
    # Template: the most frequent training target, counted by hand.
    counts: dict[str, int] = {}
    for text in train_studies.texts:
        counts[text] = counts.get(text, 0) + 1
    assert max(counts.values()) > 1
    assert {row["template_text"] for row in lines} == {max(counts, key=counts.__getitem__)}
    # Nearest neighbours by brute-force cosine, with the fine-tuned SigLIP and with the plain base model.
    test_images, train_images = test_studies.images(smoke_prepared.split("test")), train_studies.images(train)
    finetuned = load_finetuned_siglip(trained.siglip_checkpoint)
    path = base_dir(smoke_config, "siglip")
    base = FinetunedSiglip(SiglipModel.from_pretrained(path).eval(), finetuned.image_processor,
                           finetuned.tokenizer, finetuned.config, torch.device("cpu"))  # fmt: skip
    for name, siglip in (("nn_finetuned", finetuned), ("nn_base", base)):
        allowed = _brute_force_nearest(siglip, test_images, train_images, train_studies.texts)
        chosen = [row[f"{name}_text"] for row in lines]
        assert all(text in ok for text, ok in zip(chosen, allowed, strict=True)), name
    assert [row["nn_finetuned_text"] for row in lines] != [row["nn_base_text"] for row in lines]  # two encoders
    # Every metric the model gets, computed the same way, and per-study rows whose means are the corpus ROUGE-L.
    references = [row["reference"] for row in lines]
    model_metrics = {*UNIT_METRICS, "coco_cider"}
    for name in ("template", "nn_finetuned", "nn_base"):
        expected = all_metrics(references, [row[f"{name}_text"] for row in lines],
                               nltk_data_dir=smoke_config.var_path("nltk_data"))  # fmt: skip
        for metric in model_metrics:
            assert evaluated.metrics[f"{name}_{metric}"] == pytest.approx(expected[metric]), (name, metric)
        mean_rouge = sum(row[f"{name}_rougeL"] for row in lines) / len(lines)
        assert math.isclose(mean_rouge, evaluated.metrics[f"{name}_rougeL"], rel_tol=1e-6)
    assert evaluated.metrics["template_distinct_generations"] == 1
    # The other protocol (r2gen, since the smoke preset's is native): the model and every baseline re-scored on
    # R2Gen's cleaning of the same texts, under its prefix, with per-study rows whose means are its ROUGE-L.
    sets = {"": [row["generated"] for row in lines]}
    sets |= {f"{b}_": [row[f"{b}_text"] for row in lines] for b in ("template", "nn_finetuned", "nn_base")}
    for name, texts in sets.items():
        expected = all_metrics(references, texts, nltk_data_dir=smoke_config.var_path("nltk_data"), protocol="r2gen")
        for metric in model_metrics:
            assert evaluated.metrics[f"r2gen_{name}{metric}"] == pytest.approx(expected[metric]), (name, metric)
        mean_rouge = sum(row[f"r2gen_{name}rougeL"] for row in lines) / len(lines)
        assert math.isclose(mean_rouge, evaluated.metrics[f"r2gen_{name}rougeL"], rel_tol=1e-6)
    assert not any(key.startswith("native_") for key in evaluated.metrics)


@pytest.mark.parametrize("writer", ["template", "reference"])
def test_the_report_says_whether_the_generator_beats_the_template(smoke_config, smoke_prepared, trained, writer,
                                                                   monkeypatch):  # fmt: skip
    """The model's generations replaced by the template (it cannot beat it) or by the references (a clearly
    better generator), through evaluate, its predictions file and the report."""
    from jobs.pipelines.report import _per_item
    from worker.generation import predict as predict_module
    from worker.generation.evaluate import evaluate
    from worker.report.analysis import compare_runs

    train_texts = select_studies(smoke_prepared.split("train")).texts
    template = max(set(train_texts), key=lambda text: (train_texts.count(text), -train_texts.index(text)))
    references = select_studies(smoke_prepared.split("test")).texts
    written = [template] * len(references) if writer == "template" else references
    monkeypatch.setattr(predict_module, "generate_reports", lambda *args, **kwargs: list(written))
    result = evaluate(smoke_config, MemoryRecorder(), checkpoint=trained.result.metrics["best_checkpoint"])
    if writer == "template":  # scored exactly like the model: the same texts get the same numbers
        assert result.metrics["template_rougeL"] == pytest.approx(result.metrics["rougeL"])
    per_item = _per_item("evaluate", result.artifacts)
    row = {"id": 1, "job_id": 1, "stage": "evaluate", "status": "SUCCEEDED", "metrics": result.metrics,
           "cell": {"peft.method": "lora"}, "seed": 42, "per_item": per_item}  # fmt: skip
    lines = compare_runs([row], []).conclusions
    verdict = next(line for line in lines if "the template baseline" in line)
    expected = "does not beat" if writer == "template" else "beats"
    assert verdict.startswith(f"LoRA: the model {expected} the template baseline"), verdict


class _StandInLabeler:
    """Stands where f1chexbert's F1CheXbert would: built with a device, called on hypotheses and references, it
    answers in the package's shape. Not a labeler: its "F1" is the share of texts equal to their reference, so the
    numbers show which texts reached it and under which names they were recorded."""

    calls: ClassVar[list[tuple[list[str], list[str]]]] = []  # reset per test (monkeypatch)
    devices: ClassVar[list[str]] = []

    def __init__(self, device):
        self.devices.append(str(device))

    def __call__(self, *, hyps, refs):
        self.calls.append((hyps, refs))
        share = sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)
        report = {"micro avg": {"f1-score": share}, "macro avg": {"f1-score": share / 2}}
        return share / 4, [], report, {"micro avg": {"f1-score": share / 3}, "macro avg": {"f1-score": share / 5}}


def _clinical(config):
    return config.model_copy(update={"eval": config.eval.model_copy(update={"clinical": True})})


def test_clinical_metrics_of_the_model_and_every_baseline_come_from_the_labeler(smoke_config, smoke_prepared,
                                                                                 trained, monkeypatch):  # fmt: skip
    import sys
    from types import SimpleNamespace

    from worker.generation import predict as predict_module
    from worker.generation.evaluate import evaluate

    monkeypatch.setitem(sys.modules, "f1chexbert", SimpleNamespace(F1CheXbert=_StandInLabeler))
    monkeypatch.setattr(_StandInLabeler, "calls", [])
    monkeypatch.setattr(_StandInLabeler, "devices", [])
    references = select_studies(smoke_prepared.split("test")).texts
    monkeypatch.setattr(predict_module, "generate_reports", lambda *args, **kwargs: list(references))
    result = evaluate(_clinical(smoke_config), MemoryRecorder(), checkpoint=trained.result.metrics["best_checkpoint"])
    lines = [json.loads(line) for line in Path(result.artifacts["predictions"]).read_text().splitlines()]
    assert _StandInLabeler.devices == ["cpu"]
    assert all(refs == references for _, refs in _StandInLabeler.calls) and len(_StandInLabeler.calls) == 4
    # The model wrote the references: every text equal.
    assert result.metrics["clinical_f1_micro"] == 1.0 and result.metrics["clinical_accuracy_5"] == 0.25
    assert result.metrics["clinical_f1_macro"] == 0.5 and result.metrics["clinical_f1_micro_5"] == pytest.approx(1 / 3)
    for name in ("template", "nn_finetuned", "nn_base"):
        share = sum(row[f"{name}_text"] == row["reference"] for row in lines) / len(lines)
        assert result.metrics[f"{name}_clinical_f1_micro"] == pytest.approx(share), name
    assert 0 < result.metrics["template_clinical_f1_micro"] < 1


def test_clinical_without_the_package_fails_before_generating_in_one_line(smoke_config, trained, monkeypatch):
    import sys

    from worker.generation import evaluate as evaluate_module
    from worker.textmetrics import SystemDependencyMissing

    monkeypatch.setitem(sys.modules, "f1chexbert", None)  # what an environment without it gives: ImportError
    monkeypatch.setattr(evaluate_module, "predict", lambda *a, **k: pytest.fail("generated before the check"))
    with pytest.raises(SystemDependencyMissing, match=r"pip install f1chexbert==0\.0\.2") as failed:
        evaluate_module.evaluate(_clinical(smoke_config), MemoryRecorder(),
                                 checkpoint=trained.result.metrics["best_checkpoint"])  # fmt: skip
    assert "\n" not in str(failed.value) and "eval.clinical" in str(failed.value)


def test_clinical_without_its_weights_fails_before_generating_in_one_line(smoke_config, trained, monkeypatch):
    import sys
    from types import SimpleNamespace

    from worker.generation import evaluate as evaluate_module
    from worker.textmetrics import SystemDependencyMissing

    class Offline:
        def __init__(self, device):  # as hf_hub_download fails without the hub and without a cached copy
            raise OSError("We couldn't connect to 'https://huggingface.co' to load this file.\nCheck your connection.")

    monkeypatch.setitem(sys.modules, "f1chexbert", SimpleNamespace(F1CheXbert=Offline))
    monkeypatch.setattr(evaluate_module, "predict", lambda *a, **k: pytest.fail("generated before the check"))
    with pytest.raises(SystemDependencyMissing, match="StanfordAIMI/RRG_scorers") as failed:
        evaluate_module.evaluate(_clinical(smoke_config), MemoryRecorder(),
                                 checkpoint=trained.result.metrics["best_checkpoint"])  # fmt: skip
    message = str(failed.value)
    assert "\n" not in message and "HF_TOKEN" in message and "couldn't connect" in message


def _length_ratio(reference: str, generated: str) -> float:
    """A toy per-study metric: the shorter text's word count over the longer's (1.0 for equal lengths)."""
    lengths = sorted((len(reference.split()), len(generated.split())))
    return lengths[0] / lengths[1] if lengths[1] else 1.0


TOY = "study_length_ratio"


def _shows_the_toy_metric_everywhere(config, checkpoint, tmp_path) -> None:
    """The toy metric in the predictions file, the metric rows, the baseline table (paired intervals) and the
    report, under both protocols; the first place it is missing fails with the metric's name."""
    from jobs.pipelines.report import _per_item
    from worker.generation.evaluate import evaluate
    from worker.report.analysis import compare_runs
    from worker.report.metrics import find_measure
    from worker.report.stage import build_report

    measure = find_measure(TOY)  # KeyError "unknown metric 'study_length_ratio'" where it is not registered
    recorder = MemoryRecorder()
    result = evaluate(config, recorder, checkpoint=checkpoint)
    lines = [json.loads(line) for line in Path(result.artifacts["predictions"]).read_text().splitlines()]
    owners = ("", "template_", "nn_finetuned_", "nn_base_")
    for protocol in ("", "r2gen_"):
        for owner in owners:
            key, name = f"{protocol}{owner}length_ratio", f"{protocol}{owner}{TOY}"
            text = [row["generated" if not owner else f"{owner}text"] for row in lines]
            expected = [_length_ratio(*pair) for pair in zip([row["reference"] for row in lines], text, strict=True)]
            if protocol:  # the other protocol scores R2Gen's cleaning of the same texts
                from worker.data.cleaning import r2gen_tokens_text

                expected = [_length_ratio(r2gen_tokens_text(row["reference"]), r2gen_tokens_text(t))
                            for row, t in zip(lines, text, strict=True)]  # fmt: skip
            assert [row[key] for row in lines] == pytest.approx(expected), key
            assert recorder.series(name, "test") == [pytest.approx(sum(expected) / len(expected))], name
    per_item = _per_item("evaluate", result.artifacts)
    rows = [{"id": i, "job_id": i, "stage": "evaluate", "status": "SUCCEEDED", "metrics": result.metrics,
             "cell": {"peft.method": method}, "seed": 42, "per_item": per_item, "protocol": "native"}
            for i, method in ((1, "lora"), (2, "qlora"))]  # fmt: skip
    comparison = compare_runs(rows, [])
    toy_rows = [r for r in comparison.baselines if r.metric == TOY]
    assert {(r.protocol, r.baseline) for r in toy_rows if r.cell == "LoRA"} == {
        (p, b) for p in ("native", "r2gen") for b in ("template", "nn_finetuned", "nn_base")
    }
    studies = f"{len(lines)} test studies (paired bootstrap)"
    assert all(r.difference is not None and r.difference["over"] == studies for r in toy_rows)
    assert comparison.row(TOY).versus.difference["over"] == studies  # LoRA against QLoRA, study by study
    build_report(rows, [], tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    results, baselines = markdown.split("## Report generation against the baselines (test)")
    assert f"| {measure.label} | " in results
    assert {line.split(" | ")[2] for line in baselines.splitlines() if line.startswith(f"| {measure.label} |")} == {
        "native", "r2gen"
    }


@pytest.mark.parametrize("registered", [True, False])
def test_a_metric_registered_in_one_place_reaches_every_output(smoke_config, trained, tmp_path, monkeypatch,
                                                               registered):  # fmt: skip
    """Adding a per-study metric is its scoring function and one registry entry (docs/metrics.md); without the
    entry nothing of it is computed, and the check fails loudly at the first place it is missing."""
    from worker import metric_registry

    toy = metric_registry.Metric(
        TOY, "evaluate", "Length ratio, mean per test study (0-1)", 3, False, per_item="length_ratio",
        score=_length_ratio, **metric_registry.PER_STUDY,
    )  # fmt: skip
    if registered:
        monkeypatch.setattr(metric_registry, "METRICS", [*metric_registry.METRICS, toy])
        _shows_the_toy_metric_everywhere(smoke_config, trained.result.metrics["best_checkpoint"], tmp_path)
    else:
        with pytest.raises(KeyError, match=f"unknown metric '{TOY}'"):
            _shows_the_toy_metric_everywhere(smoke_config, trained.result.metrics["best_checkpoint"], tmp_path)


def test_every_metric_evaluate_records_is_registered(evaluated):
    from worker.metric_registry import unregistered

    assert unregistered("evaluate", evaluated.metrics) == []
