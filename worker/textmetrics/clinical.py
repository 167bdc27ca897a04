"""CheXbert label F1 (``eval.clinical``): the 14 CheXpert observations that CheXbert reads from a generated and
a reference report, compared as labels, the clinical metric of the report-generation literature.

The labeler comes from the `f1chexbert` package (Stanford AIMI's CheXbert, as the RRG papers score it), an
optional extra that is not in requirements.txt: it brings pandas and scikit-learn, and its weights
(``chexbert.pth``, from the Hugging Face repo ``StanfordAIMI/RRG_scorers`` into the package's cache folder,
appdirs' user cache ``chexbert``, and the ``bert-base-uncased`` tokenizer) are downloaded from the hub on first
use, so it cannot run offline. Loading it is the first thing an
evaluation with the setting on does: a missing package or missing weights fail the job in one line before any
generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from worker.textmetrics.deps import SystemDependencyMissing

PACKAGE = "f1chexbert==0.0.2"
WEIGHTS = (
    "chexbert.pth from the Hugging Face repo StanfordAIMI/RRG_scorers into its cache (~/.cache/chexbert on Linux) "
    "and the bert-base-uncased tokenizer"
)


class Labeler(Protocol):
    """f1chexbert's F1CheXbert: called on parallel lists, it returns (accuracy on the 5 main observations, the
    per-report accuracies, scikit-learn's classification_report dict over the 14 observations, the same over 5)."""

    def __call__(self, *, hyps: list[str], refs: list[str]) -> tuple[Any, Any, dict, dict]: ...


def load_labeler(device: str) -> Labeler:
    """The CheXbert labeler on `device`; SystemDependencyMissing, in one line naming what is missing and how to
    get it, when the package is not installed or its weights cannot be loaded."""
    try:
        from f1chexbert import F1CheXbert
    except ImportError as exc:
        raise SystemDependencyMissing(
            f"eval.clinical needs the f1chexbert package, which is not installed ({exc}): `pip install {PACKAGE}` "
            "in the worker's environment (it brings pandas and scikit-learn), or set eval.clinical=false"
        ) from exc
    try:
        return F1CheXbert(device=device)
    except Exception as exc:  # the hub download or its cache: OSError and huggingface_hub's errors, by version
        reason = (str(exc).splitlines() or [""])[0]
        raise SystemDependencyMissing(
            f"eval.clinical: the CheXbert weights could not be loaded ({type(exc).__name__}: {reason}); f1chexbert "
            f"downloads {WEIGHTS}: run the worker with access to the hub (HF_TOKEN if your hub needs one, "
            "HF_ENDPOINT for a mirror), or put chexbert.pth in that cache and bert-base-uncased in HF_HOME's, "
            "or set eval.clinical=false"
        ) from exc


def clinical_scores(labeler: Labeler, references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Micro and macro label F1 over the 14 observations and over the 5 the literature also reports
    (cardiomegaly, edema, consolidation, atelectasis, pleural effusion), and the 5-observation accuracy."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"need equal, non-zero numbers of texts; got {len(references)} and {len(hypotheses)}")
    accuracy, _, report_14, report_5 = labeler(hyps=list(hypotheses), refs=list(references))
    return {
        "clinical_f1_micro": float(report_14["micro avg"]["f1-score"]),
        "clinical_f1_macro": float(report_14["macro avg"]["f1-score"]),
        "clinical_f1_micro_5": float(report_5["micro avg"]["f1-score"]),
        "clinical_f1_macro_5": float(report_5["macro avg"]["f1-score"]),
        "clinical_accuracy_5": float(accuracy),
    }
