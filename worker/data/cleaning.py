"""Report text cleaning: every rule applied to IU-Xray text lives here.

``clean_text`` applies, in order:

1. Missing values (``None``, NaN from a CSV reader, blank) become ``""``.
2. The ``XXXX`` de-identification token (any run of two or more capital X, also inside a word such as
   ``x-XXXX``) is removed, with the hyphen that joined it to a word.
3. List numbering ("1. ", " 2. ") at the start of the text or after whitespace is removed; decimals such
   as "1.5 cm" stay, since the number must be followed by ". " and preceded by a space or the start.
4. Lower case.
5. Whitespace runs become one space; spaces before punctuation and repeated periods left over from
   the removals are dropped; the result is stripped.

``clean_report_r2gen`` is the other protocol: R2Gen's ``clean_report_iu_xray`` (cuhksz-nlp/R2Gen,
``modules/tokenizers.py``), which the IU-Xray report-generation literature trains and scores on.
"""

from __future__ import annotations

import math
import re

_XXXX = re.compile(r"-?X{2,}(?:-X{2,})*-?")
_LIST_NUMBER = re.compile(r"(?:^|(?<=\s))\d{1,2}\.\s+")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:])")
_REPEATED_PERIOD = re.compile(r"\.(?:\s*\.)+")
_LEADING_PUNCT = re.compile(r"^[\s.,;:]+")


# R2Gen's rules, reproduced rule for rule (including their quirks) so that scores compare with its papers.
# Report level, in this order, before lower-casing: collapse runs of periods (three passes of ".." -> "."),
# drop "1. ", turn the list numbers 2-5 into sentence ends, then split into sentences at ". ".
_R2GEN_REPORT_STEPS = (
    ("..", "."), ("..", "."), ("..", "."), ("1. ", ""),
    (". 2. ", ". "), (". 3. ", ". "), (". 4. ", ". "), (". 5. ", ". "),
    (" 2. ", ". "), (" 3. ", ". "), (" 4. ", ". "), (" 5. ", ". "),
)  # fmt: skip
_R2GEN_SENTENCE_DROPS = ('"', "/", "\\", "'")
# R2Gen's character class writes ":-\[" unescaped, a range: it strips ":" through "[" (":;<=>?@", A-Z, "[")
# besides the listed marks. The hyphen itself stays ("x-ray"), and so do digits.
_R2GEN_SENTENCE_STRIP = re.compile(r"[.,?;*!%^&_+()\]{}:;<=>?@A-Z\[]")


def _is_missing(text: object) -> bool:
    return text is None or (isinstance(text, float) and math.isnan(text))


def has_xxxx(text: str | None) -> bool:
    """Whether the text carries the de-identification token."""
    return bool(text) and _XXXX.search(text) is not None


def has_list_numbering(text: str | None) -> bool:
    """Whether the text contains list numbering like "1. " (what clean_text removes)."""
    return bool(text) and _LIST_NUMBER.search(text) is not None


def clean_text(text: str | None) -> str:
    """The cleaned, lower-case form of a report section ("" when there is no usable text)."""
    if _is_missing(text):
        return ""
    text = _XXXX.sub(" ", str(text))
    text = _LIST_NUMBER.sub("", text)
    text = text.lower()
    text = _SPACE.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PERIOD.sub(".", text)
    text = _LEADING_PUNCT.sub("", text)
    return text.strip()


def clean_report_r2gen(report: str) -> str:
    """R2Gen's ``clean_report_iu_xray``: lower case, sentences joined by " . ", "xxxx" kept, ending " .".

    Defined on any string, as R2Gen's is: an empty report becomes " .". Sentences left empty by the
    stripping stay (R2Gen's filter never removes one), so the text can hold double spaces.
    """
    for old, new in _R2GEN_REPORT_STEPS:
        report = report.replace(old, new)
    sentences = report.strip().lower().split(". ")
    cleaned = []
    for sentence in sentences:
        for mark in _R2GEN_SENTENCE_DROPS:
            sentence = sentence.replace(mark, "")
        cleaned.append(_R2GEN_SENTENCE_STRIP.sub("", sentence.strip().lower()))
    return " . ".join(cleaned) + " ."


def r2gen_tokens_text(report: str) -> str:
    """What R2Gen trains on and scores: the cleaned report's tokens joined by single spaces.

    R2Gen never scores its cleaned string itself: it maps it to token ids and decodes them, which
    joins the tokens with one space (a "/" removed between spaces would otherwise leave two).
    """
    return " ".join(clean_report_r2gen(report).split())


def clean_target(text: str | None, protocol: str) -> str:
    """A study's target text under the eval protocol ("native" or "r2gen"); "" when there is none."""
    if protocol == "r2gen":
        return "" if _is_missing(text) or not str(text).strip() else r2gen_tokens_text(str(text))
    return clean_text(text)


# R2Gen's ``clean_report_mimic_cxr`` (cuhksz-nlp/R2Gen, ``modules/tokenizers.py``) is its IU-Xray cleaner run on
# text first normalised as below: newlines become spaces, runs of underscores (MIMIC's "___" de-identification)
# and of spaces shrink (seven and six passes), and runs of periods get five passes more (eight in all).
_R2GEN_MIMIC_STEPS = (("\n", " "),) + (("__", "_"),) * 7 + (("  ", " "),) * 6 + (("..", "."),) * 5


def r2gen_mimic_prepare(report: str) -> str:
    """The steps R2Gen's MIMIC-CXR cleaner adds to its IU-Xray one: ``clean_target(r2gen_mimic_prepare(t),
    "r2gen")`` is R2Gen's ``clean_report_mimic_cxr(t)`` tokens joined by single spaces."""
    for old, new in _R2GEN_MIMIC_STEPS:
        report = report.replace(old, new)
    return report
