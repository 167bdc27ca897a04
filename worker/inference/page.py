"""The predictions as one self-contained HTML page (images embedded), one row per input file."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment
from PIL import Image

PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Predictions: {{ rows|length }} files</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: .6rem; vertical-align: top; text-align: left; }
img { width: 192px; image-rendering: pixelated; }
.error { color: #b42318; } .path { font-family: ui-monospace, monospace; font-size: .85rem; word-break: break-all; }
ol { margin: 0; padding-left: 1.2rem; } .cos { font-family: ui-monospace, monospace; color: #555; }
.note { background: #fff4e5; padding: .6rem 1rem; border-left: 4px solid #f5a623; }
</style></head><body>
<h1>Predictions on {{ rows|length }} files</h1>
<p class="note">Research use only, not for clinical use. Generated impressions can be fluent and wrong; the similar
reports are training reports ranked by the fine-tuned SigLIP's image-text cosine, not findings about the image.</p>
<p>Checkpoint: <code>{{ checkpoint }}</code>. {{ predicted }} predicted, {{ failed }} could not be read.</p>
<table><tr><th>file</th><th>image</th><th>generated impression</th><th>most similar training reports (cosine)</th></tr>
{% for row in rows %}<tr>
<td class="path">{{ row.path }}{% if row.format %}<br>{{ row.format }}{% endif %}</td>
{% if row.error %}<td></td><td colspan="2" class="error">not predicted: {{ row.error }}</td>
{% else %}<td><img alt="{{ row.path }}" src="data:image/png;base64,{{ row.image_b64 }}"></td>
<td>{{ row.impression if row.impression is not none else "(no report generator in this checkpoint)" }}</td>
<td><ol>{% for hit in row.similar_reports %}
<li>{{ hit.report }} <span class="cos">{{ "%.3f"|format(hit.cosine) }}</span></li>{% endfor %}
</ol></td>{% endif %}
</tr>{% endfor %}</table></body></html>
""")


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_page(rows: list[dict[str, Any]], images: dict[str, np.ndarray], checkpoint: str, path: Path) -> Path:
    """``rows`` are the JSONL records; ``images`` maps a predicted row's path to the pixels the model saw."""
    shown = [
        row if row["status"] == "error" else {**row, "image_b64": png_base64(images[row["path"]])} for row in rows
    ]
    failed = sum(1 for row in rows if row["status"] == "error")
    page = PAGE.render(rows=shown, checkpoint=checkpoint, predicted=len(rows) - failed, failed=failed)
    path.write_text(page, encoding="utf-8")
    return path
