"""The COCO caption toolkit (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.

Each study is one image id with one reference; the toolkit splits every text on spaces. What it is given
depends on the protocol. ``native``: our tokenization of the texts (lower case, every punctuation mark a
token; the data stage has already removed ``XXXX``), not comparable with published numbers. ``r2gen``:
R2Gen's cleaned text with no tokenization in between, as R2Gen's ``compute_scores`` does (it reports
Bleu(4), Meteor and Rouge; CIDEr is computed alongside on the same text). The toolkit's PTB tokenizer is
never used: it would start a Stanford CoreNLP JVM, and neither protocol has it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from worker.textmetrics.deps import INSTALL_HINT, SystemDependencyMissing, require_java
from worker.textmetrics.protocol import Protocol, scoring_texts
from worker.textmetrics.tokenize import normalize

COCO_NAMES = ("coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4", "coco_meteor", "coco_rougeL", "coco_cider")


def _coco_meteor(scorer: Meteor, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    try:
        score, _ = scorer.compute_score(gts, res)
    except ValueError as exc:
        # The jar answers with an empty line when the JVM died (no memory, broken runtime).
        message = f"the METEOR jar gave no score ({exc}); check `java -version`; {INSTALL_HINT}"
        raise SystemDependencyMissing(message) from exc
    return float(score)


def _toolkit_text(text: str, protocol: Protocol) -> str:
    if protocol == "r2gen":
        return scoring_texts([text], protocol)[0]  # never empty: R2Gen's cleaning always ends in " ."
    # An empty generation becomes one placeholder token: BLEU's counter asserts at least one word.
    return normalize(text) or "<empty>"


def coco_scores(
    references: Sequence[str], hypotheses: Sequence[str], *, protocol: Protocol = "native"
) -> dict[str, float]:
    """coco_bleu1..4, coco_meteor, coco_rougeL and coco_cider over the pairs, on the protocol's text."""
    return coco_scores_of_each(references, {"": hypotheses}, protocol=protocol)[""]


def coco_scores_of_each(
    references: Sequence[str], hypotheses: Mapping[str, Sequence[str]], *, protocol: Protocol = "native"
) -> dict[str, dict[str, float]]:
    """coco_scores of every named set of hypotheses against the same references. One METEOR JVM scores them
    all: its start takes seconds (about 20 s on a loaded 2-core machine), a scoring call under half a second,
    and each EVAL request is scored on its own, so sharing it changes no number."""
    if not references or any(len(h) != len(references) for h in hypotheses.values()):
        sizes = ", ".join(str(len(h)) for h in hypotheses.values())
        raise ValueError(f"need equal, non-zero numbers of texts; got {len(references)} references and {sizes}")
    gts = {i: [_toolkit_text(r, protocol)] for i, r in enumerate(references)}
    require_java()
    meteor = Meteor()
    scores = {}
    for name, texts in hypotheses.items():
        res = {i: [_toolkit_text(h, protocol)] for i, h in enumerate(texts)}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        values = [*bleu, _coco_meteor(meteor, gts, res), rouge, cider]
        scores[name] = {key: float(v) for key, v in zip(COCO_NAMES, values, strict=True)}
    return scores
