"""Strings the databases can store: no NUL byte (PostgreSQL refuses it) and no unpaired surrogate
(neither SQLite nor PostgreSQL can encode one as UTF-8; JSON allows `"\\ud800"`, command lines produce them
from bytes that are not UTF-8). Checked where text enters, so a bad string is a 422 or an exit code 2
naming the field, never an error deep in a driver.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator

_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored, or None."""
    if "\x00" in value:
        return "contains a NUL byte (\\u0000); send text without it"
    if match := _SURROGATE.search(value):
        return f"contains an unpaired surrogate (\\u{ord(match.group()):04x}); send valid Unicode text"
    return None


def _storable(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(problem)
    return value


StorableStr = Annotated[str, AfterValidator(_storable)]
"""A str field that refuses NUL bytes and unpaired surrogates (pydantic names the field)."""


def unstorable_texts(tree: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, problem) for every string value in nested dicts and lists (a config) that cannot be stored."""
    if isinstance(tree, str):
        if problem := text_problem(tree):
            yield prefix or "value", problem
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from unstorable_texts(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            yield from unstorable_texts(value, f"{prefix}[{index}]")


def printable(value: Any) -> Any:
    """`value` with what JSON cannot carry made readable: surrogates escaped, NaN and infinities as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(value) else value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, dict):
        return {str(printable(key)): printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [printable(item) for item in value]
    return printable(str(value))
