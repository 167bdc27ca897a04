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
