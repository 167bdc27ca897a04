"""The metric registry: its declarations hold together, and the docs that list metrics follow it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker import metric_registry as registry

ROOT = Path(__file__).resolve().parents[1]
GENERATED = re.compile(r"<!-- generated: python -m worker.metric_registry -->\n(.*?)<!-- end generated -->", re.S)
# A word in backticks that names a text metric (a recorded name or per-item key, with any prefix). The training
# stage's per-epoch series (pos_cosine, recall@k ...) are not all in the registry: only the report's measures.
# CheXpert Plus's report columns (`section_clinical_history`...) are a dataset's column names, not metrics.
METRIC_WORD = re.compile(r"`(?!section_)([a-z0-9_@]*(?:bleu|rouge|meteor|cider|clinical)[a-z0-9_@]*)`")


def test_each_metric_is_declared_once_per_stage():
    keys = [(m.stage, m.name) for m in registry.METRICS]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("metric", registry.METRICS, ids=lambda m: f"{m.stage}:{m.name}")
def test_declarations_are_consistent(metric):
    assert re.search(r"\(.+\)$", metric.label), "a label ends with its unit"
    assert not metric.compared or metric.baselines, "only a metric scored for the baselines is compared with them"
    assert not metric.decides or metric.compared, "only a compared metric decides 'beats the baseline'"
    if metric.score is not None:  # a per-study metric: its values are written per study and its scorer imports
        assert metric.per_item and metric.items
        assert 0.0 <= metric.scorer()("no acute disease .", "no acute disease .") <= 1.0


def test_the_deciding_measures_lead_each_baseline_table():
    for baseline in registry.BASELINES:
        compared = registry.compared_with_baseline(baseline)
        deciding = [m.decides for m in compared]
        assert any(deciding) and deciding == sorted(deciding, reverse=True), baseline.prefix


def test_per_item_keys_cover_every_prefix_a_stage_writes():
    keys = registry.per_item_keys("evaluate")
    for per_study in registry.per_study_metrics():
        for protocol in ("", "native_", "r2gen_"):
            for owner in ("", "template_", "nn_finetuned_", "nn_base_"):
                assert protocol + owner + per_study.per_item in keys
    assert set(registry.per_item_keys("train")) == {"i2t_hit@1", "t2i_hit@1", "base_i2t_hit@1", "base_t2i_hit@1"}


def test_unregistered_names_are_found():
    names = ["bleu4", "r2gen_template_coco_cider", "nn_base_distinct_generations", "bertscore", "r2gen_num_samples"]
    assert registry.unregistered("evaluate", names) == ["bertscore", "r2gen_num_samples"]


def test_an_unknown_measure_is_a_key_error_naming_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown metric 'bertscore'; allowed: .*study_rougeL"):
        registry.find("bertscore")
    assert registry.find("val_loss").name == "best_val_loss"


def test_result_columns_show_a_baseline_beside_the_model():
    columns = dict((name, header) for header, name in registry.result_columns())
    assert columns["rougeL"] == "ROUGE-L" and columns["template_rougeL"] == "template ROUGE-L"
    names = list(columns)
    assert names.index("template_rougeL") == names.index("rougeL") + 1


def test_docs_metric_table_is_generated_from_the_registry():
    found = GENERATED.search((ROOT / "docs" / "metrics.md").read_text())
    assert found, "docs/metrics.md lost its generated table"
    assert found.group(1) == registry.markdown_table(), "regenerate it: python -m worker.metric_registry"


def test_the_metrics_the_docs_name_are_registered():
    """Every text metric README.md and docs/ cite in backticks is one the registry declares (under any prefix),
    and every metric the registry declares is named in README.md or docs/metrics.md."""
    known = {name for m in registry.METRICS for name in registry.recorded_names(m)}
    known |= set(registry.per_item_keys("evaluate")) | set(registry.per_item_keys("train"))
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        cited = set(METRIC_WORD.findall(page.read_text()))
        assert cited - known == set(), page.name
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "metrics.md").read_text()
    assert [m.name for m in registry.METRICS if f"`{m.name}`" not in text] == []


def test_the_measures_the_report_picks_by_name_are_registered():
    """The report's headline conclusions and sweep columns name measures; a name the registry lost would drop its
    line silently (Comparison.row answers None), so each must resolve."""
    from worker.report.analysis import DEFAULT_METRIC, HEADLINE
    from worker.report.render import SWEEP_COLUMNS

    for name in (DEFAULT_METRIC, *HEADLINE, *SWEEP_COLUMNS):
        assert registry.find(name).name == registry.ALIASES.get(name, name)
