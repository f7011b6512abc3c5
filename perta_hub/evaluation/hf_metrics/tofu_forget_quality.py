"""TOFU's forget quality as an ``evaluate`` module: KS-test p-value of two truth-ratio samples.

Load with ``perta_hub.evaluation.load_metric("tofu_forget_quality")`` (offline). The number equals
:func:`perta_hub.evaluation.metrics.forget_quality` (``scipy.stats.ks_2samp(...).pvalue``).
"""

from __future__ import annotations

import datasets
import evaluate

from perta_hub.evaluation import metrics
from perta_hub.evaluation.hf_metrics import metric_info

_DESCRIPTION = (
    "TOFU forget quality (open-unlearning definition): scipy.stats.ks_2samp(TR_model, TR_retain).pvalue "
    "on the per-question forget truth ratios of the model under test and of the retain model."
)
_INPUTS = """
Args:
    predictions: per question, the forget truth ratio of the model under test (float).
    references: per question, the forget truth ratio of the retain model on the same question (float).
Returns:
    forget_quality: the KS p-value in [0, 1] (higher: closer to the retain model).
    log10: its base-10 logarithm (None for a p-value of 0).
"""


class TofuForgetQuality(evaluate.Metric):
    """Forget quality as TOFU computes it."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _INPUTS, {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")})

    def _compute(self, predictions: list[float], references: list[float]) -> dict:
        p = metrics.forget_quality(list(predictions), list(references))
        return {"forget_quality": p, "log10": metrics.log10_or_none(p)}
