"""Radiology-style report text for the synthetic IU-Xray studies.

Each study has a set of conditions from a small vocabulary; this module turns them into the
findings and impression sections in the phrasing of the real reports (including the ``XXXX``
de-identification token and numbered impressions). The same functions feed the tiny tokenizers'
training corpus, so the tokenizers know every word the synthetic data uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONDITIONS: tuple[str, ...] = (
    "cardiomegaly",
    "effusion_left",
    "effusion_right",
    "pneumothorax",
    "consolidation",
    "nodule",
)
"""The abnormal findings a synthetic study can carry; a study without any is "normal"."""

_NORMAL_FINDINGS = (
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "Heart size and mediastinal contours are within normal limits. "
    "No focal airspace consolidation, pleural effusion or pneumothorax.",
    "Cardiomediastinal silhouette is normal. Lungs are clear bilaterally. No pleural effusion or pneumothorax.",
    "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema. "
    "There is no focal consolidation.",
)
# The real reports mention incidental, de-identified details; these carry the XXXX token.
_XXXX_SENTENCES = (
    "The XXXX are intact.",
    "No XXXX of pleural effusion.",
    "Degenerative changes of the XXXX spine.",
    "Visualized osseous structures are XXXX intact.",
    "Chest XXXX dated XXXX.",
)
# Real impressions repeat verbatim; the first one dominates as in IU-Xray.
_NORMAL_IMPRESSIONS = (
    ("No acute cardiopulmonary abnormality.", 0.7),
    ("No acute cardiopulmonary disease.", 0.1),
    ("No active disease.", 0.1),
    ("Normal chest x-XXXX.", 0.1),
)
_CONDITION_FINDINGS = {
    "cardiomegaly": ("The heart is enlarged.", "Cardiomegaly is present.", "The cardiac silhouette is enlarged."),
    "effusion_left": (
        "There is a left pleural effusion with blunting of the left costophrenic angle.",
        "Moderate left pleural effusion.",
    ),
    "effusion_right": (
        "There is a right pleural effusion with blunting of the right costophrenic angle.",
        "Moderate right pleural effusion.",
    ),
    "pneumothorax": ("There is a right-sided pneumothorax.", "Right apical pneumothorax is seen."),
    "consolidation": ("Focal airspace consolidation in the {side} lower lobe.", "{Side} lower lobe airspace disease."),
    "nodule": ("There is a nodule in the {side} upper lobe.", "{Side} upper lobe pulmonary nodule."),
}
_CONDITION_IMPRESSIONS = {
    "cardiomegaly": ("Cardiomegaly.",),
    "effusion_left": ("Left pleural effusion.",),
    "effusion_right": ("Right pleural effusion.",),
    "pneumothorax": ("Right pneumothorax.",),
    "consolidation": ("{Side} lower lobe consolidation concerning for pneumonia.",),
    "nodule": ("{Side} upper lobe nodule.",),
}
_INDICATIONS = (
    "Chest pain.",
    "XXXX-year-old male with shortness of breath.",
    "Cough and fever.",
    "Preoperative evaluation.",
    "XXXX-year-old female, dyspnea.",
)
_MESH_TERMS = {
    "cardiomegaly": "Cardiomegaly/mild",
    "effusion_left": "Pleural Effusion/left",
    "effusion_right": "Pleural Effusion/right",
    "pneumothorax": "Pneumothorax/right",
    "consolidation": "Consolidation/lung/lower lobe/{side}",
    "nodule": "Nodule/lung/upper lobe/{side}",
}


@dataclass(frozen=True)
class ReportText:
    """The text columns of one synthetic report, and which quirks the text carries."""

    mesh: str
    problems: str
    indication: str
    comparison: str
    findings: str
    impression: str
    has_xxxx: bool
    """XXXX appears in the findings or the impression."""
    numbered: bool
    """The impression is a numbered list ("1. ... 2. ...")."""


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _fill(template: str, side: str) -> str:
    return template.format(side=side, Side=side.capitalize())


def draw_conditions(rng: np.random.Generator) -> tuple[str, ...]:
    """Normal with probability 0.4, else one condition (85%) or two (15%), in vocabulary order."""
    if rng.random() < 0.4:
        return ()
    count = 1 if rng.random() < 0.85 else 2
    picked = rng.choice(len(CONDITIONS), size=count, replace=False)
    return tuple(CONDITIONS[i] for i in sorted(picked))


def write_report(conditions: tuple[str, ...], sides: dict[str, str], rng: np.random.Generator) -> ReportText:
    """Findings and impression for a study; `sides` gives "left"/"right" for consolidation and nodule."""
    if conditions:
        sentences = [_fill(_pick(rng, _CONDITION_FINDINGS[c]), sides.get(c, "right")) for c in conditions]
        if "cardiomegaly" not in conditions:
            sentences.insert(0, "The heart is normal in size.")
        impressions = [_fill(_pick(rng, _CONDITION_IMPRESSIONS[c]), sides.get(c, "right")) for c in conditions]
        # Multi-finding impressions are numbered lists in the real data, and so are some single ones.
        numbered = (len(impressions) > 1 and rng.random() < 0.8) or rng.random() < 0.15
        if numbered:
            impression = " ".join(f"{i}. {text}" for i, text in enumerate(impressions, start=1))
        else:
            impression = " ".join(impressions)
        mesh = ";".join(_fill(_MESH_TERMS[c], sides.get(c, "right")) for c in conditions)
        problems = ";".join(_MESH_TERMS[c].split("/")[0] for c in conditions)
    else:
        sentences = [_pick(rng, _NORMAL_FINDINGS)]
        weights = np.array([w for _, w in _NORMAL_IMPRESSIONS])
        impression = _NORMAL_IMPRESSIONS[int(rng.choice(len(weights), p=weights / weights.sum()))][0]
        numbered = False
        mesh = problems = "normal"
    if rng.random() < 0.75:
        sentences.append(_pick(rng, _XXXX_SENTENCES))
    findings = " ".join(sentences)
    return ReportText(
        mesh=mesh,
        problems=problems,
        indication=_pick(rng, _INDICATIONS),
        comparison="None." if rng.random() < 0.7 else "XXXX",
        findings=findings,
        impression=impression,
        has_xxxx="XXXX" in findings or "XXXX" in impression,
        numbered=numbered,
    )


def report_corpus(seed: int, count: int = 2000) -> list[str]:
    """Raw report sentences covering the synthetic vocabulary: training text for the tiny tokenizers."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for _ in range(count):
        conditions = draw_conditions(rng)
        sides = {c: ("left" if rng.random() < 0.5 else "right") for c in ("consolidation", "nodule")}
        report = write_report(conditions, sides, rng)
        texts.extend([report.findings, report.impression, report.indication])
    return texts
