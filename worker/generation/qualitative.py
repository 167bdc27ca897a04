"""The `qualitative` stage: the best, worst and some random studies side by side with their reports.

Writes one self-contained HTML page (images embedded as base64 PNG) and a PNG grid of the same studies.
Studies are ranked by their ROUGE-L F1 against the reference; the page shows it beside a sentence BLEU
that stays sensible on short texts (worker.textmetrics.sentence_bleu4) and says which metric is which.
"""

from __future__ import annotations

import base64
import io
import random
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend on a worker
from matplotlib.image import imsave

from worker.config import RunConfig
from worker.generation.evaluate import scored_data_metrics
from worker.generation.predict import Predictions, predict
from worker.recorder import Recorder
from worker.result import StageResult
from worker.training.runs import output_dir

STAGE = "qualitative"
RANK_BY = "rougeL"
GRID_WIDTH_IN, ROW_HEIGHT_IN, GRID_DPI = 12.0, 2.2, 100
KINDS = ("best", "random", "worst")
METRICS_NOTE = (
    "ROUGE-L: F1 of the longest common word subsequence (rouge-score, stemmed); it ranks the studies. "
    "Sentence BLEU: BLEU of this one study over its words (punctuation left out), up to 4-grams; a text "
    "shorter than 4 words is scored on the n-grams it has, with equal weights, so an exact match scores "
    "1.000 at any length and a lone \".\" scores 0.000; orders without a match are smoothed (Chen & "
    "Cherry method 1) and short texts pay BLEU's brevity penalty. cos: cosine of the SigLIP image and "
    "text embeddings."
)

PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Generated reports: {{ split }} split</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 2rem; }
td, th { border-bottom: 1px solid #ddd; padding: .6rem; vertical-align: top; text-align: left; }
img { width: 160px; image-rendering: pixelated; }
.kind { font-weight: bold; text-transform: uppercase; font-size: .8rem; }
.best { color: #1a7f37; } .worst { color: #b42318; } .random { color: #555; }
.scores { font-family: ui-monospace, monospace; font-size: .85rem; white-space: nowrap; }
.note { color: #555; font-size: .9rem; max-width: 60rem; }
</style></head><body>
<h1>Generated reports: {{ split }} split</h1>
<p>{{ shown }} of {{ total }} studies: the best and the worst by per-study ROUGE-L, and some drawn at random
from the others. Texts scored under the {{ protocol }} protocol. Checkpoint: <code>{{ checkpoint }}</code>.</p>
{% if scored %}<p class="note">{{ scored }}</p>{% endif %}
<p class="note">{{ metrics_note }}</p>
{% for section in sections %}
<h2 class="{{ section.kind }}">{{ section.title }}</h2>
<table><tr><th>study</th><th>image</th><th>reference</th><th>generated</th><th>scores</th></tr>
{% for row in section.rows %}<tr>
<td><span class="kind {{ row.kind }}">{{ row.kind }}</span><br>{{ row.uid }}</td>
<td><img alt="study {{ row.uid }}" src="data:image/png;base64,{{ row.image_b64 }}"></td>
<td>{{ row.reference }}</td><td>{{ row.generated or "(empty)" }}</td>
<td class="scores">ROUGE-L {{ "%.3f"|format(row.scores.rougeL) }}<br>
sentence BLEU {{ "%.3f"|format(row.scores.bleu4) }}<br>
cos(img, gen) {{ "%.3f"|format(row.scores.cosine_generated) }}<br>
cos(img, ref) {{ "%.3f"|format(row.scores.cosine_reference) }}</td>
</tr>{% endfor %}</table>
{% endfor %}</body></html>
""")


@dataclass(frozen=True)
class Shown:
    kind: str  # best | random | worst
    index: int


def choose_studies(scores: list[float], num_samples: int, seed: int) -> list[Shown]:
    """About a third best, a third worst (ties broken by study order), and the rest drawn at random (seeded)
    from the studies that are neither: in the order drawn, not by rank, so they read as a sample."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    n = min(num_samples, len(order))
    n_best = (n + 2) // 3
    n_worst = min(n // 3, len(order) - n_best)
    best, worst = order[:n_best], order[len(order) - n_worst :] if n_worst else []
    others = sorted(order[n_best : len(order) - n_worst])
    drawn = random.Random(seed).sample(others, n - n_best - n_worst)
    return [Shown("best", i) for i in best] + [Shown("random", i) for i in drawn] + [Shown("worst", i) for i in worst]


def _section_titles(shown: list[Shown], total: int, seed: int) -> dict[str, str]:
    count = {kind: sum(1 for s in shown if s.kind == kind) for kind in KINDS}
    others = total - count["best"] - count["worst"]
    return {
        "best": f"Best {count['best']}: the highest per-study ROUGE-L",
        "random": f"Random {count['random']}: drawn (seed {seed}) from the {others} studies not shown as best or worst",
        "worst": f"Worst {count['worst']}: the lowest per-study ROUGE-L",
    }


def qualitative(
    config: RunConfig, recorder: Recorder, *, checkpoint: str, split: str = "test", num_samples: int = 10
) -> StageResult:
    """Write ``qualitative-<split>.html`` and ``qualitative-<split>.png``; return their paths."""
    predictions = predict(config, checkpoint, split)
    shown = choose_studies([s[RANK_BY] for s in predictions.scores], num_samples, config.seed)
    folder = output_dir(config, STAGE, checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    html = write_html(
        predictions, shown, checkpoint, folder / f"qualitative-{split}.html",
        protocol=config.eval.protocol, seed=config.seed,
    )  # fmt: skip
    png = write_grid(predictions, shown, folder / f"qualitative-{split}.png")
    metrics = {
        "num_shown": len(shown),
        f"mean_{RANK_BY}_shown": _mean(predictions, shown, RANK_BY),
        **scored_data_metrics(predictions),
    }
    recorder.log_metrics(metrics, split=split)
    return StageResult(stage=STAGE, metrics=metrics, artifacts={"html": str(html), "png": str(png)})


def _mean(predictions: Predictions, shown: list[Shown], name: str) -> float:
    return sum(predictions.scores[s.index][name] for s in shown) / len(shown)


def _png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    imsave(buffer, image, cmap="gray", vmin=0, vmax=255, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def scored_note(predictions: Predictions) -> str:
    """Which studies were scored, in words: the split, and the training studies among them (none) or left out."""
    if predictions.plan is None:
        return ""
    plan = predictions.plan
    where = "another dataset, with the checkpoint's" if plan.other_dataset else "the checkpoint's"
    left_out = f", {predictions.train_excluded} left out" if predictions.train_excluded else ""
    return (f"Studies of {where} {plan.scored.data.describe_split()}; studies the model trained on among them: "
            f"{predictions.train_overlap}{left_out}.")  # fmt: skip


def write_html(
    predictions: Predictions, shown: list[Shown], checkpoint: str, path: Path, *, protocol: str, seed: int
) -> Path:
    """The page: one section per kind (best, random, worst), each titled with how its studies were chosen."""
    rows = [
        {
            "kind": s.kind,
            "uid": predictions.studies.study_ids[s.index],
            "image_b64": _png_base64(predictions.images[s.index]),
            "reference": predictions.references[s.index],
            "generated": predictions.generated[s.index],
            "scores": predictions.scores[s.index],
        }
        for s in shown
    ]
    total = len(predictions.generated)
    titles = _section_titles(shown, total, seed)
    sections = [
        {"kind": kind, "title": titles[kind], "rows": [row for row in rows if row["kind"] == kind]}
        for kind in KINDS
        if any(row["kind"] == kind for row in rows)
    ]
    page = PAGE.render(
        sections=sections, shown=len(rows), total=total, split=predictions.split, checkpoint=checkpoint,
        protocol=protocol, metrics_note=METRICS_NOTE, scored=scored_note(predictions),
    )  # fmt: skip
    path.write_text(page, encoding="utf-8")
    return path


def write_grid(predictions: Predictions, shown: list[Shown], path: Path) -> Path:
    """One row per study: the image, then reference, generated text and scores.
    Size: GRID_WIDTH_IN x (ROW_HEIGHT_IN * rows) inches at GRID_DPI."""
    fig = Figure(figsize=(GRID_WIDTH_IN, ROW_HEIGHT_IN * len(shown)), dpi=GRID_DPI)
    axes = fig.subplots(len(shown), 2, gridspec_kw={"width_ratios": [1, 5]}, squeeze=False)
    for (image_ax, text_ax), s in zip(axes, shown, strict=True):
        image_ax.imshow(predictions.images[s.index], cmap="gray", vmin=0, vmax=255)
        image_ax.set_axis_off()
        scores = predictions.scores[s.index]
        text = "\n".join([
            f"{s.kind.upper()}  {predictions.studies.study_ids[s.index]}   ROUGE-L {scores['rougeL']:.3f}   "
            f"sentence BLEU {scores['bleu4']:.3f}   cos(img,gen) {scores['cosine_generated']:.3f}",
            textwrap.fill("reference: " + predictions.references[s.index], 110),
            textwrap.fill("generated: " + (predictions.generated[s.index] or "(empty)"), 110),
        ])
        text_ax.text(0.0, 0.5, text, va="center", ha="left", fontsize=9, family="monospace", wrap=True)
        text_ax.set_axis_off()
    # A fixed canvas (no tight bbox) keeps the file's pixel size predictable for readers and tests.
    fig.subplots_adjust(left=0.01, right=0.99, top=0.98, bottom=0.02, wspace=0.03)
    fig.savefig(path, format="png")
    return path
