"""The qualitative page's rules, on planted predictions (no model): per-study scores that make sense for
short texts, named on the page, and random studies drawn apart from the best and the worst."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from worker.generation.predict import Predictions
from worker.generation.qualitative import choose_studies, write_html
from worker.generation.studies import Studies
from worker.textmetrics import per_item_scores

# (reference, generated): two exact matches of different lengths, a lone ".", and partial matches.
PAIRS = [
    ("Heart normal.", "Heart normal."),
    ("No acute cardiopulmonary abnormality. Lungs clear.", "No acute cardiopulmonary abnormality. Lungs clear."),
    ("No acute cardiopulmonary abnormality.", "."),
    ("Mild cardiomegaly with small left effusion.", "Mild cardiomegaly."),
    ("Right lower lobe pneumonia.", "No pneumothorax."),
    ("Stable nodule in the left upper lobe.", "Stable left upper lobe nodule."),
]


def _predictions(pairs: list[tuple[str, str]]) -> Predictions:
    references, generated = [p[0] for p in pairs], [p[1] for p in pairs]
    scores = [
        {**s, "cosine_generated": 0.5, "cosine_reference": 0.6}
        for s in per_item_scores(references, generated)
    ]
    uids = [f"study-{i}" for i in range(len(pairs))]
    studies = Studies(study_ids=uids, texts=references, rows=list(range(len(pairs))))
    images = np.zeros((len(pairs), 8, 8), dtype=np.uint8)
    return Predictions("test", studies, images, generated, scores, generation_time_s=1.0)


def _scores_by_uid(html: str) -> dict[str, dict[str, float]]:
    """uid -> the scores the page prints in that study's row."""
    rows = re.findall(r'<span class="kind \w+">\w+</span><br>(study-\d+)</td>(.*?)</tr>', html, re.S)
    return {
        uid: {name: float(v) for name, v in re.findall(r"(ROUGE-L|sentence BLEU) (\d\.\d{3})", cells)}
        for uid, cells in rows
    }


def test_page_scores_make_sense_for_short_texts(tmp_path: Path):
    predictions = _predictions(PAIRS)
    shown = choose_studies([s["rougeL"] for s in predictions.scores], len(PAIRS), seed=0)
    html = write_html(predictions, shown, "ckpt", tmp_path / "q.html", protocol="native", seed=0).read_text()
    printed = _scores_by_uid(html)
    assert set(printed) == {f"study-{i}" for i in range(len(PAIRS))}
    # Every exact match shows 1.000 whatever its length (smoothed BLEU-4 gave a two-word one 0.316).
    for uid in ("study-0", "study-1"):
        assert printed[uid] == {"ROUGE-L": 1.0, "sentence BLEU": 1.0}, uid
    # A lone "." shares no words with any report.
    assert printed["study-2"] == {"ROUGE-L": 0.0, "sentence BLEU": 0.0}
    # A partial match scores strictly between, and a shorter correct text pays the brevity penalty.
    for uid in ("study-3", "study-5"):
        assert 0.0 < printed[uid]["sentence BLEU"] < 1.0 and 0.0 < printed[uid]["ROUGE-L"] < 1.0, uid
    # The page says which metric is which, and how the sentence BLEU treats short texts.
    assert "ROUGE-L: F1 of the longest common word subsequence" in html
    assert "Sentence BLEU:" in html and "shorter than 4 words" in html


def test_page_puts_each_kind_in_its_own_section(tmp_path: Path):
    predictions = _predictions(PAIRS * 3)
    shown = choose_studies([s["rougeL"] for s in predictions.scores], 7, seed=3)
    html = write_html(predictions, shown, "ckpt", tmp_path / "q.html", protocol="r2gen", seed=3).read_text()
    headings = re.findall(r'<h2 class="(\w+)">([^<]*)</h2>', html)
    assert [kind for kind, _ in headings] == ["best", "random", "worst"]
    # 18 studies, 7 shown: 3 best and 2 worst, so 2 random ones drawn from the other 13.
    assert "drawn (seed 3) from the 13 studies not shown as best or worst" in dict(headings)["random"]
    # Each section holds only its own kind of row.
    for part in html.split("<h2")[1:]:
        kind = re.match(r' class="(\w+)"', part).group(1)
        assert set(re.findall(r'<span class="kind (\w+)">', part)) == {kind}
    assert "r2gen protocol" in html


@pytest.mark.parametrize("num_samples", [3, 7, 10])
def test_random_studies_are_drawn_apart_from_best_and_worst(num_samples: int):
    scores = [float(s) for s in np.random.default_rng(0).random(40)]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    draws: Counter[int] = Counter()
    for seed in range(50):
        shown = choose_studies(scores, num_samples, seed)
        kinds = {kind: [s.index for s in shown if s.kind == kind] for kind in ("best", "random", "worst")}
        assert kinds["best"] == order[: len(kinds["best"])]
        assert kinds["worst"] == order[len(order) - len(kinds["worst"]) :]
        assert len(shown) == num_samples == len({s.index for s in shown})
        assert not set(kinds["random"]) & (set(kinds["best"]) | set(kinds["worst"]))
        draws.update(kinds["random"])
    # Over seeds the draw reaches across the whole middle of the ranking, not only its neighbours.
    middle = set(order[len(kinds["best"]) : len(order) - len(kinds["worst"])])
    assert set(draws) <= middle and len(draws) > len(middle) // 2
