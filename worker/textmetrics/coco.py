"""The COCO caption toolkit (pycocoevalcap) as R2Gen-family IU-Xray papers use it.

Texts are lower-cased and split into words and punctuation by our tokenizer (the toolkit's own PTB
tokenizer would start a Stanford CoreNLP JVM); each study is one image id with one reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from worker.textmetrics.deps import INSTALL_HINT, SystemDependencyMissing, require_java
from worker.textmetrics.tokenize import normalize

COCO_NAMES = ("coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4", "coco_meteor", "coco_rougeL", "coco_cider")


def _coco_meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    require_java()
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    except ValueError as exc:
        # The jar answers with an empty line when the JVM died (no memory, broken runtime).
        message = f"the METEOR jar gave no score ({exc}); check `java -version`; {INSTALL_HINT}"
        raise SystemDependencyMissing(message) from exc
    return float(score)


def coco_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """coco_bleu1..4, coco_meteor, coco_rougeL and coco_cider over the pairs."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"need equal, non-zero numbers of texts; got {len(references)} and {len(hypotheses)}")
    gts = {i: [normalize(r)] for i, r in enumerate(references)}
    # An empty generation becomes one placeholder token: BLEU's counter asserts at least one word.
    res = {i: [normalize(h) or "<empty>"] for i, h in enumerate(hypotheses)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    values = [*bleu, _coco_meteor(gts, res), rouge, cider]
    return {name: float(v) for name, v in zip(COCO_NAMES, values, strict=True)}
