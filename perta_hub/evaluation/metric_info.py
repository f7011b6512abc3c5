"""What each reported metric is: its key, column title, name, meaning and which direction is better.

The one table the experiment report (:mod:`perta_hub.evaluation.report`: the summary rows, the columns of
``results.md``, the "What the numbers mean" section) and the model cards' ``model-index`` names read. Adding
a metric to the report is one :class:`MetricInfo` here: a summary row takes it from each evaluation result
(``source``, ``field``), and it becomes a column of the results table when ``column`` is set and some row has
a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perta_hub.evaluation.privacy import ATTACKS, HEADLINE_ATTACK

#: "better" values; a metric may also give its own short phrase (e.g. "closer to the retain model's")
HIGHER = "higher"
LOWER = "lower"
NEAR_ZERO = "closer to 0"
#: forget quality at or above this reaches the retain model: the KS test's 5 % significance level
REACHED_FQ = 0.05
REACHED_CRITERION = (f"forget quality >= {REACHED_FQ:g} within the utility budget: the KS test at the 5 % level "
                     "cannot tell the model's forget truth ratios from the retain model's (the usual reading of "
                     "TOFU's forget quality, a p-value)")


@dataclass(frozen=True)
class MetricInfo:
    """One reported number.

    Attributes:
        key: its name in a summary row (``results.json`` ``rows``).
        label: the column title in ``results.md``.
        name: the human name (model cards' ``metric_name``, the definitions table).
        meaning: what it measures, in one sentence.
        better: which direction is better (:data:`HIGHER`, :data:`LOWER` or a short phrase), with the goal.
        source: the evaluation result's key it is read from (default ``key``).
        field: the field of ``result[source]`` (``agg_value``; ``log10`` for log10 FQ).
        column: a column of the results table (when some row has a value).
        digits: decimals in the table (values below 1e-3 get 3 significant digits).
    """

    key: str
    label: str
    name: str
    meaning: str
    better: str
    source: str | None = None
    field: str = "agg_value"
    column: bool = True
    digits: int = 4

    @property
    def result_key(self) -> str:
        """The evaluation result's key holding this metric."""
        return self.source or self.key

    def value(self, result: Mapping[str, Any]) -> Any:
        """The number in an evaluation result (``result[result_key][field]``; None when absent)."""
        return (result.get(self.result_key) or {}).get(self.field)

    def advantage(self, a: Any, b: Any) -> Any:
        """How much better ``a`` is than ``b`` (> 0: a is better), floats or arrays, by the direction ``better``
        starts with (:data:`HIGHER`, :data:`LOWER`, :data:`NEAR_ZERO`); other metrics have no such direction."""
        direction = self.better.split(" (")[0]
        if direction == HIGHER:
            return a - b
        if direction == LOWER:
            return b - a
        if direction == NEAR_ZERO:
            return abs(b) - abs(a)
        raise ValueError(f"{self.key}: no direction of 'better' to compare by ({self.better})")


#: every reported metric, in the order of the results table's columns and of the definitions
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("forget_quality", "forget quality", "Forget quality (KS-test p-value)",
               "p-value of the two-sample Kolmogorov-Smirnov test between the model's per-question forget truth "
               "ratios and the retain model's: how well the model passes for one never trained on the forget set",
               f"{HIGHER} (at least 0.05: the test cannot tell the model from the retain model)"),
    MetricInfo("log10_forget_quality", "log10 FQ", "log10 of forget quality",
               "the same p-value on a log scale (papers often show it)", f"{HIGHER} (0 is the top)",
               source="forget_quality", field="log10", digits=2),
    MetricInfo("model_utility", "model utility", "Model utility (harmonic mean of 9)",
               "harmonic mean of probability, ROUGE-L and truth ratio on the retain, real-author and world-fact "
               "questions (9 numbers; any zero gives 0)",
               f"{HIGHER} (the goal: the target's; a setting counts only within the utility budget)"),
    MetricInfo("forget_extraction_strength", "ES forget", "Forget extraction strength",
               "share of each forget answer the model reproduces verbatim under teacher forcing, counted from the "
               "end (1 - k*/n), mean over questions", f"{LOWER} (down to the retain model's)",
               source="extraction_strength"),
    MetricInfo("retain_extraction_strength", "ES retain", "Retain extraction strength",
               "the same on the retain authors' questions", f"{HIGHER} (kept knowledge)"),
    MetricInfo("forget_rouge", "ROUGE forget", "Forget ROUGE-L recall",
               "ROUGE-L recall of the greedy answer against the true answer, mean over the forget questions",
               f"{LOWER} (down to the retain model's)", source="forget_Q_A_ROUGE"),
    MetricInfo("retain_rouge", "ROUGE retain", "Retain ROUGE-L recall",
               "the same on the retain authors' questions (one of the 9 utility numbers)", HIGHER,
               source="retain_Q_A_ROUGE"),
    MetricInfo("forget_probability", "prob forget", "Forget probability",
               "mean length-normalised probability exp(-mean token NLL) of the true forget answer",
               f"{LOWER} (down to the retain model's)", source="forget_Q_A_Prob", column=False),
    MetricInfo("retain_probability", "prob retain", "Retain probability",
               "the same on the retain authors' questions (one of the 9 utility numbers)", HIGHER,
               source="retain_Q_A_Prob", column=False),
    MetricInfo("forget_truth_ratio", "TR forget", "Forget truth ratio",
               "per question TR = P(perturbed wrong answers) / P(paraphrased true answer); mean of min(TR, 1/TR), "
               "1 when the true answer is no likelier than wrong ones",
               "closer to the retain model's (forget quality compares the whole distribution)", column=False),
    MetricInfo("retain_truth_ratio", "TR retain", "Retain truth ratio",
               "mean of max(0, 1 - TR) on the retain authors' questions (one of the 9 utility numbers)", HIGHER,
               source="retain_Truth_Ratio", column=False),
    MetricInfo("privleak", f"PrivLeak {ATTACKS[HEADLINE_ATTACK]} (%)", f"PrivLeak ({ATTACKS[HEADLINE_ATTACK]}, %)",
               f"PrivLeak of the {ATTACKS[HEADLINE_ATTACK]} membership-inference attack (forget rows against "
               "TOFU's holdout rows): the relative change of its AUC against the retain model's, in %",
               f"{NEAR_ZERO} (as private as the retain model; > 0: the model still leaks its forget set, < 0: "
               "over-unlearned)", digits=2),
    MetricInfo(HEADLINE_ATTACK, f"AUC {ATTACKS[HEADLINE_ATTACK]}", f"MIA AUC ({ATTACKS[HEADLINE_ATTACK]})",
               f"ROC AUC of the {ATTACKS[HEADLINE_ATTACK]} attack telling the forget rows (members) from the holdout "
               "rows (0.5: no signal)", "closer to the retain model's (PrivLeak compares the two)"),
    *(MetricInfo(key, f"AUC {label}", f"MIA AUC ({label})",
                 f"ROC AUC of the {label} attack telling the forget rows from the holdout rows (0.5: no signal)",
                 "closer to the retain model's", column=False)
      for key, label in ATTACKS.items() if key != HEADLINE_ATTACK),
    *(MetricInfo(f"privleak_{key.removeprefix('mia_')}", f"PrivLeak {label} (%)", f"PrivLeak ({label}, %)",
                 f"PrivLeak of the {label} attack, in %", f"{NEAR_ZERO} (> 0: still leaks, < 0: over-unlearned)",
                 source=key, field="privleak", column=False, digits=2)
      for key, label in ATTACKS.items() if key != HEADLINE_ATTACK),
)
#: what the paired comparison of two models judges (metric keys)
COMPARED = ("forget_quality", "model_utility", "privleak")
#: the nine components of model utility (evaluation result keys), in the benchmark's order
UTILITY_KEYS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)

_BY_KEY = {m.key: m for m in METRICS}
_BY_SOURCE = {m.result_key: m for m in METRICS if m.field == "agg_value"}


def metric(key: str) -> MetricInfo:
    """The metric whose summary-row key is ``key``."""
    return _BY_KEY[key]


def metric_for_result_key(result_key: str) -> MetricInfo:
    """The metric read from the evaluation result's ``result_key`` (``agg_value``)."""
    return _BY_SOURCE[result_key]
