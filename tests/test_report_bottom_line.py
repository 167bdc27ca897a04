"""The report's bottom line is computed from the numbers: it names the winner whichever way they go."""

from __future__ import annotations

from worker.report.bottom_line import BaselineVerdict, Outcome, bottom_line

MEMORY = Outcome("Weight memory", 0.96, 0.51, lower_is_better=True)
BASELINES = [
    BaselineVerdict("LoRA", "template baseline", True),
    BaselineVerdict("QLoRA", "template baseline", True),
    BaselineVerdict("LoRA", "nearest-neighbour baseline", False),
    BaselineVerdict("QLoRA", "nearest-neighbour baseline", False),
]


def _line(recall: Outcome) -> list[str]:
    return bottom_line("LoRA", "QLoRA", [recall], [MEMORY], seeds=3, baselines=BASELINES)


def test_qlora_wins_when_its_interval_is_above_zero_on_a_higher_is_better_measure():
    lines = _line(Outcome("Image-to-text recall@1", 0.80, 0.90, lower_is_better=False, low=0.02, high=0.15))

    assert lines[0] == (
        "QLoRA wins on quality: better than LoRA on Image-to-text recall@1 (0.9 against 0.8), worse on none."
    )
    assert lines[1] == "QLoRA against LoRA: Weight memory 47% lower."
    assert "3 seeds" in lines[2]
    assert lines[3] == (
        "Baselines: LoRA and QLoRA beat the template baseline; neither beats the nearest-neighbour baseline."
    )
    assert 3 <= len(lines) <= 5


def test_lora_wins_when_qlora_is_significantly_worse():
    lines = _line(Outcome("Image-to-text recall@1", 0.90, 0.80, lower_is_better=False, low=-0.15, high=-0.02))

    assert lines[0].startswith("LoRA wins on quality: QLoRA is worse on Image-to-text recall@1 (0.8 against 0.9)")


def test_a_lower_loss_is_a_win_and_an_interval_holding_zero_is_no_winner():
    loss = Outcome("Best validation loss", 0.50, 0.40, lower_is_better=True, low=-0.2, high=-0.01)
    assert bottom_line("LoRA", "QLoRA", [loss], [], seeds=3)[0].startswith("QLoRA wins on quality")

    tie = Outcome("Best validation loss", 0.50, 0.48, lower_is_better=True, low=-0.05, high=0.01)
    assert bottom_line("LoRA", "QLoRA", [tie], [], seeds=3)[0].startswith("No winner on quality")


def test_one_seed_without_intervals_says_it_cannot_name_a_winner():
    lines = bottom_line("LoRA", "QLoRA", [Outcome("Image-to-text recall@1", 0.87, 0.80, False)], [MEMORY], seeds=1)

    assert lines[0] == (
        "No winner can be named on quality from these runs, QLoRA against LoRA: "
        "Image-to-text recall@1 (0.8 against 0.87); no measure has an interval."
    )
    assert lines[2].startswith("One seed") and "--seeds 3" in lines[2]


def test_baselines_with_the_same_outcome_share_one_clause():
    verdicts = [
        *(BaselineVerdict(c, "template baseline", True) for c in ("LoRA", "QLoRA")),
        *(BaselineVerdict(c, "nearest-neighbour baseline (base SigLIP)", True) for c in ("LoRA", "QLoRA")),
        BaselineVerdict("LoRA", "nearest-neighbour baseline (fine-tuned SigLIP)", True),
        BaselineVerdict("QLoRA", "nearest-neighbour baseline (fine-tuned SigLIP)", False),
    ]
    lines = bottom_line("LoRA", "QLoRA", [], [], seeds=3, baselines=verdicts)

    assert lines[-1] == (
        "Baselines: LoRA and QLoRA beat the template baseline and the nearest-neighbour baseline (base SigLIP); "
        "only LoRA beats the nearest-neighbour baseline (fine-tuned SigLIP)."
    )
