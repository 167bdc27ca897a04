"""Markdown and self-contained HTML renderings of a Comparison."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from worker.report.compare import Comparison


def fmt(value: float | None) -> str:
    """Numbers as a reader wants them: integers with separators, small values with 3-4 digits."""
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def markdown(c: Comparison, title: str) -> str:
    lines = [f"# {title}", "", "| measure | LoRA | QLoRA | QLoRA/LoRA |", "|---|---:|---:|---:|"]
    lines += [f"| {r['label']} | {fmt(r['lora'])} | {fmt(r['qlora'])} | {fmt_ratio(r['ratio'])} |" for r in c.table]
    lines += ["", "## Conclusions", ""] + [f"- {line}" for line in c.conclusions]
    return "\n".join(lines) + "\n"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 70rem; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .3rem .6rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .missing { color: #b00; }
img { max-width: 100%; margin: .5rem 0; }
</style></head><body>
<h1>{{ title }}</h1>
<table><tr><th>measure</th><th>LoRA</th><th>QLoRA</th><th>QLoRA/LoRA</th></tr>
{% for r in rows %}<tr><td>{{ r.label }}</td><td class="num">{{ r.lora }}</td><td class="num">{{ r.qlora }}</td>
<td class="num">{{ r.ratio }}</td></tr>
{% endfor %}</table>
<h2>Conclusions</h2><ul>{% for line in conclusions %}<li>{{ line }}</li>{% endfor %}</ul>
{% if missing %}<p class="missing">Missing: {{ missing | join("; ") }}</p>{% endif %}
{% for name, data in charts.items() %}<h3>{{ name.replace("_", " ") }}</h3>
<img alt="{{ name }}" src="data:image/png;base64,{{ data }}">{% endfor %}
</body></html>
"""


def html(c: Comparison, title: str, charts: dict[str, Path]) -> str:
    rows: list[dict[str, Any]] = [
        {"label": r["label"], "lora": fmt(r["lora"]), "qlora": fmt(r["qlora"]), "ratio": fmt_ratio(r["ratio"])}
        for r in c.table
    ]
    encoded = {name: base64.b64encode(path.read_bytes()).decode() for name, path in charts.items()}
    template = Environment(autoescape=select_autoescape(default=True)).from_string(_HTML)
    return template.render(title=title, rows=rows, conclusions=c.conclusions, missing=c.missing, charts=encoded)
