"""Report text cleaning: one table of inputs and the text the models see."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.data.cleaning import (
    clean_report_r2gen,
    clean_target,
    clean_text,
    has_list_numbering,
    has_xxxx,
    r2gen_tokens_text,
)


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


# R2Gen's clean_report_iu_xray, worked out by hand from its rules (and checked against its own code):
# runs of periods collapse, "1. " goes and " 2. ".." 5. " end a sentence, everything is lower case, each
# sentence loses " / \ ' and . , ? ; * ! % ^ & _ + ( ) [ ] { } plus the ':' to '[' range its pattern
# spells by accident (so "<", "=", "@" go, "-" and digits stay), and sentences are joined by " . ".
@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("No acute cardiopulmonary abnormality.", "no acute cardiopulmonary abnormality ."),
        (
            "1. The heart is normal in size. 2. XXXX opacity, right lower lobe.. 3. No effusion (stable).",
            "the heart is normal in size . xxxx opacity right lower lobe . no effusion stable .",
        ),
        ("Normal limits... Lungs clear", "normal limits . lungs clear ."),
        ("Thoracic spine/ T-spine; x-XXXX.", "thoracic spine t-spine x-xxxx ."),
        ("Stable 1.5 cm nodule; Heart / lungs: normal.", "stable 15 cm nodule heart  lungs normal ."),
        ("Nodule <5 mm @ apex = stable.", "nodule 5 mm  apex  stable ."),
        ('"Stable" [old] {new}!', "stable old new ."),
        ("Lungs clear.. . Heart normal", "lungs clear .  . heart normal ."),
        ("Findings: 1. Clear 2. Normal heart 10. other", "findings clear . normal heart 10 . other ."),
        ("", " ."),
    ],
)
def test_clean_report_r2gen(raw: str, cleaned: str) -> None:
    assert clean_report_r2gen(raw) == cleaned


def test_r2gen_target_is_single_spaced_and_empty_without_text() -> None:
    assert r2gen_tokens_text("Heart / lungs: normal.") == "heart lungs normal ."
    assert clean_target("Heart / lungs: normal.", "r2gen") == "heart lungs normal ."
    for missing in ("", "  ", None, math.nan):
        assert clean_target(missing, "r2gen") == ""  # a study without the section, not " ."
    assert clean_target("1. Normal XXXX.", "native") == clean_text("1. Normal XXXX.")


@given(st.text(alphabet=st.sampled_from(list("abXY12. ,;:/()<-'\"")), max_size=60))
def test_r2gen_text_is_a_fixed_point(raw: str) -> None:
    # Scoring cleans references that the data stage has already cleaned: a second pass must change nothing.
    once = r2gen_tokens_text(raw)
    assert r2gen_tokens_text(once) == once
