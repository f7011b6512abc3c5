"""TOFU's truth ratio as an ``evaluate`` module: per question and its forget or retain aggregate.

Load with ``perta_hub.evaluation.load_metric("tofu_truth_ratio")`` (offline). Numbers equal
:func:`perta_hub.evaluation.metrics.truth_ratio` and ``truth_ratio_forget`` / ``truth_ratio_retain``.
"""

from __future__ import annotations

import datasets
import evaluate

from perta_hub.evaluation import metrics
from perta_hub.evaluation.hf_metrics import metric_info

_DESCRIPTION = (
    "TOFU truth ratio (open-unlearning definition): TR = exp(-mean_j avg_nll(perturbed_j)) / "
    "(exp(-avg_nll(correct)) + 1e-10); aggregate mean(min(TR, 1/(TR + 1e-10))) on a forget split, "
    "mean(max(0, 1 - TR)) on retain, real authors and world facts."
)
_INPUTS = """
Args:
    correct_avg_nll: per question, the mean token NLL (nats) of the paraphrased answer (forget, retain)
        or of the answer (real authors, world facts).
    perturbed_avg_nlls: per question, the mean token NLL of each perturbed answer (a non-empty list).
    split: "forget" (default) or "retain" (also for real authors / world facts): which aggregate.
Returns:
    truth_ratio: the aggregate (TOFU's forget_truth_ratio or *_Truth_Ratio value).
    scores: the per-question truth ratios, in input order (forget quality's inputs).
"""


class TofuTruthRatio(evaluate.Metric):
    """Truth ratio as TOFU computes it."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _INPUTS, {"correct_avg_nll": datasets.Value("float64"),
                            "perturbed_avg_nlls": datasets.Sequence(datasets.Value("float64"))})

    def _compute(self, correct_avg_nll: list[float], perturbed_avg_nlls: list[list[float]],
                 split: str = "forget") -> dict:
        if split not in ("forget", "retain"):
            raise ValueError(f"split must be 'forget' or 'retain', got {split!r}")
        ratios = [metrics.truth_ratio(c, list(p)) for c, p in zip(correct_avg_nll, perturbed_avg_nlls, strict=True)]
        aggregate = metrics.truth_ratio_forget if split == "forget" else metrics.truth_ratio_retain
        return {"truth_ratio": aggregate(ratios), "scores": ratios}
