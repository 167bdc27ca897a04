"""Each configuration against its baselines in the report, from rows the test writes itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker.report.analysis import compare_runs
from worker.report.stage import build_report
from worker.report.stats import paired_bootstrap_difference

STUDIES = [f"s{i}" for i in range(40)]
IMAGES = [f"img{i}.png" for i in range(30)]
GENERATION_BASELINES = ("template", "nn_finetuned", "nn_base")


def _scores(rng, level):
    return {uid: float(np.clip(level + rng.normal(0, 0.05), 0, 1)) for uid in STUDIES}


def evaluate_row(id_, method, model, baselines, seed=42):
    """An evaluate experiment whose per-study bleu4/rougeL are `model` and each baseline's its own."""
    per_item = {"bleu4": model["bleu4"], "rougeL": model["rougeL"]}
    metrics = {"bleu4": 0.2, "rougeL": float(np.mean(list(model["rougeL"].values())))}
    for name, values in baselines.items():
        per_item |= {f"{name}_bleu4": values["bleu4"], f"{name}_rougeL": values["rougeL"]}
        metrics |= {f"{name}_bleu4": 0.1, f"{name}_rougeL": float(np.mean(list(values["rougeL"].values())))}
    return {"id": id_, "job_id": 100 + id_, "stage": "evaluate", "peft_method": method, "status": "SUCCEEDED",
            "metrics": metrics, "cell": {"peft.method": method}, "seed": seed, "per_item": per_item}  # fmt: skip


def generation_rows(model_gain):
    """LoRA and QLoRA against three baselines; each baseline scores about 0.3 per study, the model 0.3 + gain."""
    rng = np.random.default_rng(0)
    baselines = {name: {"bleu4": _scores(rng, 0.3), "rougeL": _scores(rng, 0.3)} for name in GENERATION_BASELINES}
    rows = []
    for id_, method in ((1, "lora"), (2, "qlora")):
        if model_gain is None:  # the model's generations are the template's: the same text, the same scores
            model = baselines["template"]
        else:
            model = {k: {u: v + model_gain for u, v in baselines["template"][k].items()} for k in ("bleu4", "rougeL")}
        rows.append(evaluate_row(id_, method, model, baselines))
    return rows, baselines


def conclusion(c, start):
    return next(line for line in c.conclusions if line.startswith(start))


def test_a_model_that_writes_the_template_does_not_beat_the_template():
    c = compare_runs(generation_rows(model_gain=None)[0], [])
    line = conclusion(c, "LoRA: the model does not beat the template baseline (most frequent training text)")
    assert "ROUGE-L F1, mean per test study 0.315 against 0.315 (0.000, 95% CI 0.000 to 0.000)" in line
    assert line.endswith("; over 40 test studies (paired bootstrap).")
    assert conclusion(c, "QLoRA: the model does not beat the template baseline")
    assert not any("beats the template" in line for line in c.conclusions)


def test_a_clearly_better_generator_beats_every_baseline():
    rows, baselines = generation_rows(model_gain=0.3)
    c = compare_runs(rows, [])
    for cell in ("LoRA", "QLoRA"):
        for label in ("template baseline", "nearest-neighbour baseline (fine-tuned SigLIP)",
                      "nearest-neighbour baseline (base SigLIP)"):  # fmt: skip
            assert conclusion(c, f"{cell}: the model beats the {label}")
    # The row's interval is the paired bootstrap of model minus baseline over the same studies.
    row = next(r for r in c.baselines if (r.cell, r.baseline, r.metric) == ("LoRA", "nn_base", "study_rougeL"))
    expected = paired_bootstrap_difference({42: baselines["nn_base"]["rougeL"]}, {42: rows[0]["per_item"]["rougeL"]})
    assert row.difference["mean"] == pytest.approx(expected.mean)
    assert (row.difference["low"], row.difference["high"]) == pytest.approx((expected.low, expected.high))
    assert row.difference["low"] > 0
    assert row.baseline_value["mean"] == pytest.approx(np.mean(list(baselines["nn_base"]["rougeL"].values())))


def test_a_generator_below_a_baseline_is_called_worse():
    c = compare_runs(generation_rows(model_gain=-0.2)[0], [])
    assert conclusion(c, "LoRA: the model is worse than the template baseline")


def test_a_baseline_without_per_study_values_is_one_seed_not_a_conclusion():
    rows, _ = generation_rows(model_gain=0.3)
    for r in rows:
        r["per_item"] = {}
        r["metrics"] |= {"template_rougeL": 0.1, "rougeL": 0.9}
    c = compare_runs(rows, [])
    corpus = next(r for r in c.baselines if (r.cell, r.baseline, r.metric) == ("LoRA", "template", "rougeL"))
    assert corpus.difference is None and corpus.model["mean"] == 0.9
    assert not any(line.startswith("LoRA: the model beats") for line in c.conclusions)


def train_row(id_, method, tuned, base):
    per_item = {"i2t_hit@1": dict(zip(IMAGES, tuned, strict=True)),
                "base_i2t_hit@1": dict(zip(IMAGES, base, strict=True))}  # fmt: skip
    metrics = {"i2t_recall@1": sum(tuned) / 30, "base_i2t_recall@1": sum(base) / 30,
               "i2t_recall@5": 0.9, "base_i2t_recall@5": 0.4}  # fmt: skip
    return {"id": id_, "job_id": 100 + id_, "stage": "train", "peft_method": method, "status": "SUCCEEDED",
            "metrics": metrics, "cell": {"peft.method": method}, "seed": 42, "per_item": per_item}  # fmt: skip


@pytest.mark.parametrize("gained", [12, 0])
def test_fine_tuned_retrieval_is_compared_with_the_base_model_image_by_image(gained):
    base = [1.0] * 6 + [0.0] * 24
    tuned = [1.0] * (6 + gained) + [0.0] * (24 - gained)
    c = compare_runs([train_row(1, "lora", tuned, base), train_row(2, "qlora", base, base)], [])
    row = next(r for r in c.baselines if (r.cell, r.metric) == ("LoRA", "i2t_recall@1"))
    assert row.baseline == "base" and row.model["mean"] == pytest.approx((6 + gained) / 30)
    assert row.baseline_value["mean"] == pytest.approx(0.2)
    assert row.difference["mean"] == pytest.approx(gained / 30)
    assert row.difference["over"] == "30 validation images (paired bootstrap)"
    line = conclusion(c, "LoRA: fine-tuning")
    if gained:
        assert line.startswith("LoRA: fine-tuning improved retrieval over the base SigLIP (zero-shot)")
        assert "Image-to-text recall@1, validation 0.600 against 0.200 (+0.400, 95% CI +" in line
    else:
        assert line.startswith("LoRA: fine-tuning did not improve retrieval over the base SigLIP")
    assert conclusion(c, "QLoRA: fine-tuning did not improve retrieval")
    recall5 = next(r for r in c.baselines if (r.cell, r.metric) == ("LoRA", "i2t_recall@5"))
    assert recall5.difference is None  # no per-image record, one seed


def test_the_report_shows_the_baseline_tables_and_keeps_them_in_the_json(tmp_path):
    rows = generation_rows(model_gain=0.3)[0]
    rows += [train_row(3, "lora", [1.0] * 20 + [0.0] * 10, [1.0] * 5 + [0.0] * 25)]
    build_report(rows, [], tmp_path, compare_job_id=1, report_job_id=2)
    text = (tmp_path / "report.md").read_text()
    assert "## Fine-tuned against the base model (retrieval, validation)" in text
    assert "## Report generation against the baselines (test)" in text
    assert "| Measure | Configuration | Model | Template | Model − Template [95% CI] | NN, fine-tuned |" in text
    assert "| Image-to-text recall@1, validation (0-1) | LoRA | 0.667 | 0.167 | +0.500 [" in text
    report = json.loads((tmp_path / "report.json").read_text())
    assert {(r["cell"], r["baseline"]) for r in report["baselines"]} == {
        ("LoRA", "base"), *((cell, b) for cell in ("LoRA", "QLoRA") for b in GENERATION_BASELINES)
    }


def with_r2gen(rows, model_gain):
    """The same rows scored under the second protocol too: r2gen_* per-study values (the model `model_gain`
    above each baseline's), as evaluate records them beside eval.protocol's."""
    rng = np.random.default_rng(1)
    for r in rows:
        for name in ("", *(f"{b}_" for b in GENERATION_BASELINES)):
            for key in ("bleu4", "rougeL"):
                level = 0.5 + (model_gain if not name else 0.0)
                r["per_item"][f"r2gen_{name}{key}"] = _scores(rng, level)
        r["protocol"] = "native"  # the run's eval.protocol: r2gen is the other one
    return rows


def test_both_protocols_get_their_rows_and_conclusions(tmp_path):
    rows = with_r2gen(generation_rows(model_gain=0.3)[0], model_gain=0.0)
    c = compare_runs(rows, [])
    protocols = {(r.cell, r.baseline, r.protocol, r.primary) for r in c.baselines}
    assert ("LoRA", "template", "native", True) in protocols and ("LoRA", "template", "r2gen", False) in protocols
    r2gen = next(r for r in c.baselines if (r.cell, r.baseline, r.protocol, r.metric) ==
                 ("LoRA", "nn_base", "r2gen", "study_rougeL"))  # fmt: skip
    model, base = rows[0]["per_item"]["r2gen_rougeL"], rows[0]["per_item"]["r2gen_nn_base_rougeL"]
    expected = paired_bootstrap_difference({42: base}, {42: model})
    assert r2gen.difference["mean"] == pytest.approx(expected.mean)
    assert (r2gen.difference["low"], r2gen.difference["high"]) == pytest.approx((expected.low, expected.high))
    assert r2gen.model["mean"] == pytest.approx(np.mean(list(model.values())))
    # eval.protocol decides the unqualified conclusion; the other protocol's says which it is, and may differ.
    assert conclusion(c, "LoRA: the model beats the template baseline")
    assert conclusion(c, "LoRA, r2gen protocol: the model does not beat the template baseline")
    build_report(rows, [], tmp_path, compare_job_id=1, report_job_id=2)
    text = (tmp_path / "report.md").read_text().split("## Report generation against the baselines (test)")[1]
    assert "| Measure | Configuration | Protocol | Model | Template | Model − Template [95% CI] |" in text
    table = [line for line in text.split("##")[0].splitlines() if line.startswith("| ROUGE-L F1, mean per test")]
    assert [line.split(" | ")[1:3] for line in table] == [
        ["LoRA", "native"], ["QLoRA", "native"], ["LoRA", "r2gen"], ["QLoRA", "r2gen"]
    ]


def test_a_protocol_that_gives_the_same_numbers_is_merged_into_one_conclusion():
    rows = generation_rows(model_gain=0.3)[0]
    for r in rows:  # the second protocol scored exactly what the first did (text both tokenize alike)
        r["per_item"] |= {f"r2gen_{key}": values for key, values in list(r["per_item"].items())}
        r["metrics"]["r2gen_bleu4"] = r["metrics"]["bleu4"]
        r["protocol"] = "native"  # the run's eval.protocol: r2gen is the other one
    c = compare_runs(rows, [])

    merged = conclusion(c, "LoRA: the model beats the template baseline")
    assert merged.endswith("; the same under the r2gen protocol.")
    assert not [line for line in c.conclusions if "LoRA, r2gen protocol" in line]


def test_rows_that_name_no_protocol_have_no_protocol_column(tmp_path):
    build_report(generation_rows(model_gain=0.3)[0], [], tmp_path)
    assert "| Measure | Configuration | Model | Template |" in (tmp_path / "report.md").read_text()


def test_clinical_f1_where_recorded_gets_a_baseline_row_beside_the_others():
    rows, _ = generation_rows(model_gain=0.3)
    rows[0]["metrics"] |= {"clinical_f1_micro": 0.42, "template_clinical_f1_micro": 0.61}
    c = compare_runs(rows, [])
    clinical = [r for r in c.baselines if r.metric == "clinical_f1_micro"]
    assert [(r.cell, r.baseline) for r in clinical] == [("LoRA", "template")]  # only what was recorded
    assert (clinical[0].model["mean"], clinical[0].baseline_value["mean"]) == (0.42, 0.61)
    assert clinical[0].difference is None  # one seed, no per-study labels: no interval, and no say in the verdict
    assert conclusion(c, "LoRA: the model beats the template baseline")
    assert c.row("clinical_f1_micro").label == "CheXbert label F1, micro, 14 observations (0-1)"
