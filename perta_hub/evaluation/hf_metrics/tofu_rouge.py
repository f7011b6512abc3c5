"""TOFU's ROUGE metric as an ``evaluate`` module: ROUGE-L recall of a generation against the answer.

Load with ``evaluate.load(perta_hub.evaluation.metric_path("tofu_rouge"))`` or
``perta_hub.evaluation.load_metric("tofu_rouge")`` (offline). Numbers equal
:func:`perta_hub.evaluation.metrics.rouge_scores` (``rouge_score``, ``use_stemmer=True``).
"""

from __future__ import annotations

import datasets
import evaluate

from perta_hub.evaluation import metrics
from perta_hub.evaluation.hf_metrics import metric_info

_DESCRIPTION = (
    "TOFU ROUGE (open-unlearning definition): rouge_score RougeScorer(['rouge1', 'rougeL'], use_stemmer=True)"
    ".score(reference, prediction); the benchmark's number is the mean ROUGE-L recall."
)
_INPUTS = """
Args:
    predictions: generated answers (str), one per question.
    references: ground-truth answers (str), one per question.
Returns:
    rougeL_recall: mean ROUGE-L recall (the TOFU ``*_Q_A_ROUGE`` value), in [0, 1].
    rouge1_recall, rougeL_f1: means of the other two per-question scores.
    scores: per-question dicts {rouge1_recall, rougeL_f1, rougeL_recall}, in input order.
"""


class TofuRouge(evaluate.Metric):
    """ROUGE-L recall as TOFU computes it."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _INPUTS, {"predictions": datasets.Value("string"), "references": datasets.Value("string")})

    def _compute(self, predictions: list[str], references: list[str]) -> dict:
        scores = [metrics.rouge_scores(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
        out: dict = {key: metrics.mean(s[key] for s in scores) for key in ("rougeL_recall", "rouge1_recall",
                                                                           "rougeL_f1")}
        out["scores"] = scores
        return out
