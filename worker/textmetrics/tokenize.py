"""One tokenization for every metric, so that NLTK and COCO scores count the same words."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers, with each punctuation mark a token of its own."""
    return _TOKEN.findall(text.lower())


def normalize(text: str) -> str:
    """The tokens joined by single spaces: the form the COCO toolkit expects (it splits on spaces)."""
    return " ".join(tokenize(text))


def words(text: str) -> list[str]:
    """The tokens that are words or numbers, punctuation left out."""
    return [token for token in tokenize(text) if token[0].isalnum()]
