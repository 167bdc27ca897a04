"""Markdown and self-contained HTML renderings of a Comparison, from one list of sections.

Both formats print the same strings: fixed decimals per measure (metrics.fmt), units in every row label, the
mean with the half-width of its 95% interval when there are several seeds.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from worker.metric_registry import deciding
from worker.report.analysis import Comparison
from worker.report.bottom_line import report_bottom_line
from worker.report.metrics import TIMING_NOISE_BAND, find_measure, fmt, signed
from worker.report.plots import CHART_TITLES

# Beyond this many configurations the measure-by-configuration table is too wide to read; report.json has it.
MAX_WIDE_CELLS = 6
SWEEP_COLUMNS = ("best_val_loss", "i2t_recall@1", "train_time_s", "peak_gpu_mem_mb", "weight_memory_mb", "bleu4")


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric_from: int = 1  # columns from this index on are right-aligned numbers


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: Table | None = None
    items: list[str] = field(default_factory=list)


def with_interval(summary: dict[str, Any], decimals: int) -> str:
    """'0.867 ± 0.041' (mean ± half-width of the 95% interval), or the value alone for a single seed."""
    if summary["mean"] is None:
        return "—"
    if summary["high"] is None:
        return fmt(summary["mean"], decimals)
    return f"{fmt(summary['mean'], decimals)} ± {fmt(summary['high'] - summary['mean'], decimals)}"


def difference_text(diff: dict[str, Any] | None, decimals: int) -> str:
    if diff is None:
        return "—"
    if diff.get("identical_on"):
        return f"identical on every {diff['identical_on']}"
    return f"{signed(diff['mean'], decimals)} [{signed(diff['low'], decimals)}, {signed(diff['high'], decimals)}]"


def title_of(c: Comparison) -> str:
    if c.kind == "compare" and c.grid_keys == ["peft.method"]:
        return " vs ".join(cell.label for cell in c.cells) or "LoRA vs QLoRA"
    return "Sweep over " + " × ".join(c.grid_keys)


def subtitle_of(c: Comparison) -> str:
    parent = f"{'sweep' if c.kind == 'sweep' else 'comparison'} job {c.compare_job_id}"
    who = f"Report job {c.report_job_id} on {parent}" if c.report_job_id else f"Report on {parent}"
    seeds = c.seeds
    runs = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})" if seeds else "no runs"
    spread = "; values are the mean ± the half-width of its 95% t-interval over seeds" if len(seeds) > 1 else ""
    split = f" Every seed used the same data split ({c.split})." if c.split else ""
    return f"{who}: {len(c.cells)} configurations, {runs}{spread}.{split}"


def _measure_table(c: Comparison) -> Table:
    pair = len(c.cells) == 2
    headers = ["Measure", *(cell.label for cell in c.cells)]
    if pair:
        b, a = c.cells[1].label, c.cells[0].label
        headers += [f"{b}/{a}", f"{b} − {a} [95% CI]", "Significant"]
    rows = []
    for row in c.table:
        d = row.decimals
        line = [row.label, *(with_interval(s, d) for s in row.cells)]
        if pair:
            diff = row.versus.difference if row.versus else None
            ratio = row.versus.ratio if row.versus else None
            line += [
                "—" if ratio is None else f"{ratio:.2f}x",
                difference_text(diff, d),
                "—" if diff is None else ("yes" if diff["significant"] else "no"),
            ]
        rows.append(line)
    return Table(headers, rows)


def _sweep_table(c: Comparison) -> Table:
    """One row per configuration, sorted by the grid's keys in order: the chosen metric first."""
    metrics = list(dict.fromkeys([c.metric, *SWEEP_COLUMNS]))
    rows_by_metric = [r for m in metrics if (r := c.row(m, find_measure(m).stage)) is not None]
    headers = [*c.grid_keys, *(r.label for r in rows_by_metric)]
    rows = []
    for index, cell in enumerate(c.cells):
        values = [str(cell.values[key]) for key in c.grid_keys]
        rows.append(values + [with_interval(r.cells[index], r.decimals) for r in rows_by_metric])
    return Table(headers, rows, numeric_from=len(c.grid_keys))


BASELINE_SECTIONS = {
    "train": ("Fine-tuned against the base model (retrieval, validation)",
              "The un-adapted SigLIP, scored by the train stage on the same validation images before its first step."),
    "evaluate": ("Report generation against the baselines (test)",
                 "Scored like the model on the same test studies and protocol: the most frequent training text for "
                 "every study (Template), and the training text of the most similar training image by the "
                 "fine-tuned and by the base SigLIP (NN). Each difference is model minus baseline. Every text is "
                 "scored under both protocols: eval.protocol's rows first, then the other protocol's (native: this "
                 "project's tokenization; r2gen: R2Gen's cleaning and the COCO toolkit on its space-split text)."),
}  # fmt: skip


def _baseline_sections(c: Comparison) -> list[Section]:
    """One table per stage: a row per measure and configuration (and protocol, where evaluate scored both), the
    model, then each baseline and the difference."""
    out = []
    for stage, (title, paragraph) in BASELINE_SECTIONS.items():
        rows = [r for r in c.baselines if r.stage == stage]
        if not rows:
            continue
        names = list(dict.fromkeys((r.baseline, r.short) for r in rows))
        by_key = {(r.protocol, r.metric, r.cell, r.baseline): r for r in rows}
        order = list(dict.fromkeys(r.protocol for r in rows))
        with_protocol = any(order)
        headers = ["Measure", "Configuration", *(["Protocol"] if with_protocol else []), "Model"]
        for _, short in names:
            headers += [short, f"Model − {short.split(',')[0]} [95% CI]"]
        table_rows = []
        # eval.protocol's rows first, then the other protocol's: each block reads like the single-protocol table.
        keys = dict.fromkeys((r.protocol, r.metric, r.cell) for r in rows)
        for protocol, metric, cell in sorted(keys, key=lambda key: order.index(key[0])):
            first = next(r for r in rows if (r.protocol, r.metric, r.cell) == (protocol, metric, cell))
            d = first.decimals
            line = [first.label, cell, *([protocol] if with_protocol else []), with_interval(first.model, d)]
            for name, _ in names:
                row = by_key.get((protocol, metric, cell, name))
                line += ["—", "—"] if row is None else [
                    with_interval(row.baseline_value, d), difference_text(row.difference, d)
                ]  # fmt: skip
            table_rows.append(line)
        out.append(Section(title, [paragraph], Table(headers, table_rows, numeric_from=3 if with_protocol else 2)))
    return out


def _group_sections(c: Comparison) -> list[Section]:
    measure = find_measure(c.metric)
    sections = []
    for key, groups in c.groups.items():
        rows = [[g["value"], with_interval(g, measure.decimals), str(g["n"])] for g in groups]
        sections.append(
            Section(
                f"By {key}",
                [f"{measure.label} for each value of {key}, pooled over the other keys and the seeds."],
                Table([key, measure.label, "Runs"], rows),
            )
        )
    return sections


def _reading_notes() -> list[str]:
    per_study = " and ".join(m.short_name for m in deciding("evaluate"))
    return [
        "Each configuration ran once per seed, all with the same seeds; the seed sets the initialisation and the "
        "data order, not the split (data.split_seed), so every seed is scored on the same test studies.",
        "Intervals of a difference are paired. Where the stage wrote a value per item they come from 2,000 paired "
        "bootstrap resamples of the items both runs scored (within each seed): the test studies for the 'mean per "
        "test study' rows, the validation images for recall@1 (per-image hits at the best epoch). Every other row's "
        "interval is over the seeds both configurations ran (Student t), and so is recall@1's when per-image "
        "hits were not recorded.",
        "Recall@5 and @10 have no per-image record: their intervals are over seeds only.",
        "'Significant' means the 95% interval of the difference excludes 0; with one seed there is no interval.",
        f"Timing and throughput from one run have no interval but a stated ±{TIMING_NOISE_BAND:.0%} noise band: "
        "two timed steps of one run on a 2-core CPU box differed by a median of 5.9%, so a smaller difference reads "
        "'no difference'; a larger one from one seed is still not a conclusion.",
        "Baseline tables: model minus baseline within one configuration, paired over the same validation images "
        f"(base SigLIP, recall@1) or test studies (per-study {per_study}). A conclusion says the model "
        "beats a baseline only where every one of those intervals lies above 0, and 'does not beat' where one "
        "holds 0; a difference with no interval is one seed, not a conclusion.",
        "Every number in report.json lists the ids of the experiment rows it came from (`jobs results`, "
        "`jobs metrics ID`).",
    ]


def sections(c: Comparison) -> list[Section]:
    out = [Section("Bottom line", [" ".join(lines)])] if (lines := report_bottom_line(c)) else []
    if c.kind == "sweep":
        out.append(Section("Results by configuration", table=_sweep_table(c)))
        out += _group_sections(c)
    if len(c.cells) <= MAX_WIDE_CELLS:
        out.append(Section("Results" if c.kind == "compare" else "All measures", table=_measure_table(c)))
    else:
        out.append(Section("All measures", [f"{len(c.cells)} configurations: the full table is in report.json."]))
    out += _baseline_sections(c)
    out.append(Section("Conclusions", items=c.conclusions))
    if c.missing:
        out.append(Section("Missing steps", items=c.missing))
    out.append(Section("How to read the intervals", items=_reading_notes()))
    return out


def _markdown_table(table: Table) -> list[str]:
    align = ["---" if i < table.numeric_from else "---:" for i in range(len(table.headers))]
    return [
        "| " + " | ".join(table.headers) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(row) + " |" for row in table.rows),
    ]


def markdown(c: Comparison) -> str:
    lines = [f"# {title_of(c)}", "", subtitle_of(c)]
    for section in sections(c):
        lines += ["", f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        if section.table:
            lines += _markdown_table(section.table)
        lines += [f"- {item}" for item in section.items]
    return "\n".join(lines) + "\n"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}{{ tab }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 80rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; } td, th { border: 1px solid #ccc; padding: .3rem .6rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.subtitle { color: #444; } img { max-width: 100%; margin: .5rem 0; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="subtitle">{{ subtitle }}</p>
{% for s in sections %}<h2>{{ s.title }}</h2>
{% for p in s.paragraphs %}<p>{{ p }}</p>{% endfor %}
{% if s.table %}<table><tr>{% for h in s.table.headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in s.table.rows %}<tr>{% for v in row %}
<td{% if loop.index0 >= s.table.numeric_from %} class="num"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% if s.items %}<ul>{% for i in s.items %}<li>{{ i }}</li>{% endfor %}</ul>{% endif %}
{% endfor %}
{% if charts %}<h2>Charts</h2>{% endif %}
{% for name, data in charts %}<h3>{{ name }}</h3>
<img alt="{{ name }}" src="data:image/png;base64,{{ data }}">{% endfor %}
</body></html>
"""


def html(c: Comparison, charts: dict[str, Path]) -> str:
    titles = {**CHART_TITLES, "metric_bars": f"{find_measure(c.metric).label} per configuration"}
    encoded = [(titles.get(name, name), base64.b64encode(path.read_bytes()).decode()) for name, path in charts.items()]
    template = Environment(autoescape=select_autoescape(default=True)).from_string(_HTML)
    tab = f" (report job {c.report_job_id})" if c.report_job_id else ""
    return template.render(title=title_of(c), tab=tab, subtitle=subtitle_of(c), sections=sections(c), charts=encoded)
