"""The text each metric scores, per evaluation protocol.

``native``: the texts as given (each metric tokenizes them itself, see ``tokenize``).
``r2gen``: R2Gen's ``clean_report_iu_xray`` tokens joined by single spaces, as its papers score them;
applied to references and generated texts alike (idempotent, so already-cleaned targets are unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.data.cleaning import r2gen_tokens_text
from worker.metric_registry import PROTOCOLS, ScoringProtocol

__all__ = ["PROTOCOLS", "ScoringProtocol", "other_protocol", "scoring_texts"]


def scoring_texts(texts: Sequence[str], protocol: ScoringProtocol) -> list[str]:
    if protocol == "r2gen":
        return [r2gen_tokens_text(text) for text in texts]
    if protocol == "native":
        return list(texts)
    raise ValueError(f"unknown eval protocol '{protocol}'; allowed: native, r2gen")


def other_protocol(protocol: ScoringProtocol) -> ScoringProtocol:
    """The protocol that is not ``protocol``: evaluate scores it too, under its name as a metric prefix."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown eval protocol '{protocol}'; allowed: {', '.join(PROTOCOLS)}")
    return "r2gen" if protocol == "native" else "native"
