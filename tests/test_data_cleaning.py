"""Report text cleaning: one table of inputs and the text the models see."""

from __future__ import annotations

import math

import pytest

from worker.data.cleaning import clean_text, has_list_numbering, has_xxxx


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("No acute cardiopulmonary abnormality.", "no acute cardiopulmonary abnormality."),
        ("1. Cardiomegaly. 2. Small left pleural effusion.", "cardiomegaly. small left pleural effusion."),
        (" 2. Left effusion", "left effusion"),
        ("Nodule measuring 1.5 cm.", "nodule measuring 1.5 cm."),
        ("Normal chest x-XXXX.", "normal chest x."),
        ("Heart size XXXX normal. Stable XXXX-XXXX opacity.", "heart size normal. stable opacity."),
        ("XXXX-year-old male", "year-old male"),
        ("No  XXXX of effusion .\r\n  Lungs   clear.", "no of effusion. lungs clear."),
        ("XXXX.", ""),
        ("Chest XXXX dated XXXX.", "chest dated."),
        ("", ""),
        ("   \t ", ""),
        (None, ""),
        (math.nan, ""),
    ],
)
def test_clean_text(raw: object, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


def test_cleaned_text_has_no_token_numbering_or_capitals() -> None:
    text = clean_text("1. Right XXXX effusion. 2. XXXX Cardiomegaly. 3. Stable.")
    assert "xxxx" not in text
    assert not has_list_numbering(text)
    assert text == text.lower() == "right effusion. cardiomegaly. stable."


@pytest.mark.parametrize(
    ("text", "xxxx", "numbered"),
    [
        ("1. Cardiomegaly.", False, True),
        ("Heart XXXX normal.", True, False),
        ("Measures 1.5 cm.", False, False),
        ("", False, False),
        (None, False, False),
    ],
)
def test_quirk_detectors(text: str | None, xxxx: bool, numbered: bool) -> None:
    assert has_xxxx(text) is xxxx
    assert has_list_numbering(text) is numbered
