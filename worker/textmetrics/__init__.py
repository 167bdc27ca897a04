"""Text-generation metrics: the seed's NLTK/rouge-score metrics and the COCO caption toolkit's.

Every function takes parallel lists of reference and generated texts (one pair per study) and returns
plain floats under the names the stages record and the report shows (``bleu4``, ``rougeL``,
``coco_cider``, ...).
METEOR needs WordNet (NLTK) and a Java runtime (COCO); where either is missing it raises
:class:`SystemDependencyMissing` with the command that installs it, never a synonym-free score.
"""

from worker.textmetrics.coco import coco_scores
from worker.textmetrics.deps import SystemDependencyMissing
from worker.textmetrics.nltk_metrics import bleu_scores, meteor_score, sentence_bleu4
from worker.textmetrics.rouge import rouge_scores, sentence_rouge_l
from worker.textmetrics.suite import all_metrics, all_metrics_of_each, check_system_dependencies, per_item_scores
from worker.textmetrics.tokenize import tokenize
from worker.textmetrics.wordnet import ensure_wordnet_data, load_wordnet

__all__ = [
    "SystemDependencyMissing",
    "all_metrics",
    "all_metrics_of_each",
    "bleu_scores",
    "check_system_dependencies",
    "coco_scores",
    "ensure_wordnet_data",
    "load_wordnet",
    "meteor_score",
    "per_item_scores",
    "rouge_scores",
    "sentence_bleu4",
    "sentence_rouge_l",
    "tokenize",
]
