"""What each aggregate TOFU / privacy number is: key, label, meaning, which direction is better, where it sits.

The one list (:data:`METRICS`) that the table, the model card, the bootstrap intervals and the paired
comparison read. ``path`` locates the value in a result dict of :func:`perta_hub.evaluation.tofu.evaluate_tofu`
(``("forget_quality", "agg_value")``, or ``("privleak", "by_attack", "mia_loss")``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perta_hub.evaluation.privacy import ATTACKS, HEADLINE_ATTACK

#: the directions of "better" a metric can have
HIGHER, LOWER, NEAR_ZERO, NEAR_RETAIN = "higher", "lower", "closer to 0", "closer to the retain model's"


@dataclass(frozen=True)
class MetricInfo:
    """One aggregate number of an evaluation.

    Attributes:
        key: flat name (the result's top-level key, or ``privleak_<attack>`` for a per-attack PrivLeak).
        label: short column title.
        name: human name (model cards).
        meaning: one sentence: what it measures and its range / unit.
        better: :data:`HIGHER`, :data:`LOWER`, :data:`NEAR_ZERO` or :data:`NEAR_RETAIN` (for unlearning).
        path: keys from the result dict down to the value.
    """

    key: str
    label: str
    name: str
    meaning: str
    better: str
    path: tuple[str, ...]

    def value(self, result: Mapping[str, Any]) -> float | None:
        """The number in ``result`` (None when absent or None)."""
        node: Any = result
        for part in self.path:
            if not isinstance(node, Mapping) or node.get(part) is None:
                return None
            node = node[part]
        return float(node)

    def advantage(self, a: Any, b: Any) -> Any:
        """How much better ``a`` is than ``b`` (> 0: a is better); floats or arrays. Only for :data:`HIGHER`,
        :data:`LOWER` and :data:`NEAR_ZERO` (the others need the retain model's value)."""
        if self.better == HIGHER:
            return a - b
        if self.better == LOWER:
            return b - a
        if self.better == NEAR_ZERO:
            return abs(b) - abs(a)
        raise ValueError(f"{self.key}: no direction of 'better' to compare by ({self.better})")


def _agg(key: str, label: str, name: str, meaning: str, better: str) -> MetricInfo:
    return MetricInfo(key, label, name, meaning, better, (key, "agg_value"))


METRICS: tuple[MetricInfo, ...] = (
    _agg("forget_quality", "forget quality", "Forget quality (KS-test p-value)",
         "p-value of the KS test between the model's and the retain model's forget truth ratios (0..1)", HIGHER),
    _agg("model_utility", "model utility", "Model utility (harmonic mean of 9)",
         "harmonic mean of probability, ROUGE-L recall and truth ratio on retain, real authors, world facts "
         "(0..1)", HIGHER),
    _agg("forget_truth_ratio", "forget TR", "Forget truth ratio",
         "mean of min(TR, 1/TR) over forget questions (0..1)", NEAR_RETAIN),
    _agg("forget_Q_A_Prob", "forget prob", "Forget probability",
         "mean length-normalised probability of the forget answers (0..1)", NEAR_RETAIN),
    _agg("forget_Q_A_PARA_Prob", "forget para prob", "Forget paraphrase probability",
         "mean length-normalised probability of the paraphrased forget answers (0..1)", NEAR_RETAIN),
    _agg("forget_Q_A_PERT_Prob", "forget pert prob", "Forget perturbed probability",
         "mean over forget questions of the mean probability of the perturbed answers (0..1)", NEAR_RETAIN),
    _agg("forget_Q_A_ROUGE", "forget ROUGE-L", "Forget ROUGE-L recall",
         "mean ROUGE-L recall of greedy answers to forget questions (0..1)", NEAR_RETAIN),
    _agg("extraction_strength", "forget ES", "Forget extraction strength",
         "mean extraction strength of the forget answers (0..1; memorised suffix share)", LOWER),
    _agg("retain_extraction_strength", "retain ES", "Retain extraction strength",
         "mean extraction strength of the retain answers (0..1)", HIGHER),
    _agg("retain_Q_A_Prob", "retain prob", "Retain probability",
         "mean length-normalised probability of the retain answers (0..1)", HIGHER),
    _agg("retain_Q_A_PARA_Prob", "retain para prob", "Retain paraphrase probability",
         "mean probability of the paraphrased retain answers (0..1)", HIGHER),
    _agg("retain_Q_A_PERT_Prob", "retain pert prob", "Retain perturbed probability",
         "mean over retain questions of the mean probability of the perturbed answers (0..1)", LOWER),
    _agg("retain_Q_A_ROUGE", "retain ROUGE", "Retain ROUGE-L recall",
         "mean ROUGE-L recall of greedy answers to retain questions (0..1)", HIGHER),
    _agg("retain_Truth_Ratio", "retain TR", "Retain truth ratio", "mean of max(0, 1 - TR) on retain (0..1)",
         HIGHER),
    _agg("ra_Q_A_Prob", "ra raw prob", "Real authors probability",
         "mean probability of the real-author answers, not normalised (0..1)", HIGHER),
    _agg("ra_Q_A_PERT_Prob", "ra pert prob", "Real authors perturbed probability",
         "mean probability of the perturbed real-author answers (0..1)", LOWER),
    _agg("ra_Q_A_Prob_normalised", "ra prob", "Real authors probability (normalised)",
         "mean of P(a) / (P(a) + sum of P(perturbed)) on real authors (0..1)", HIGHER),
    _agg("ra_Q_A_ROUGE", "ra ROUGE", "Real authors ROUGE-L recall", "mean ROUGE-L recall on real authors (0..1)",
         HIGHER),
    _agg("ra_Truth_Ratio", "ra TR", "Real authors truth ratio", "mean of max(0, 1 - TR) on real authors (0..1)",
         HIGHER),
    _agg("wf_Q_A_Prob", "wf raw prob", "World facts probability",
         "mean probability of the world-fact answers, not normalised (0..1)", HIGHER),
    _agg("wf_Q_A_PERT_Prob", "wf pert prob", "World facts perturbed probability",
         "mean probability of the perturbed world-fact answers (0..1)", LOWER),
    _agg("wf_Q_A_Prob_normalised", "wf prob", "World facts probability (normalised)",
         "mean of P(a) / (P(a) + sum of P(perturbed)) on world facts (0..1)", HIGHER),
    _agg("wf_Q_A_ROUGE", "wf ROUGE", "World facts ROUGE-L recall", "mean ROUGE-L recall on world facts (0..1)",
         HIGHER),
    _agg("wf_Truth_Ratio", "wf TR", "World facts truth ratio", "mean of max(0, 1 - TR) on world facts (0..1)",
         HIGHER),
    *(_agg(key, f"AUC {label}", f"MIA AUC ({label}, forget vs holdout)",
           f"ROC AUC of the {label} attack telling forget (members) from holdout rows (0.5 = no signal)",
           NEAR_RETAIN) for key, label in ATTACKS.items()),
    MetricInfo("privleak", f"PrivLeak {ATTACKS[HEADLINE_ATTACK]}", f"PrivLeak ({ATTACKS[HEADLINE_ATTACK]}, %)",
               f"MUSE's PrivLeak of the {ATTACKS[HEADLINE_ATTACK]} attack: relative change of (1 - AUC) against the retain model's, in "
               "% (< 0: still leaks, > 0: over-unlearned)", NEAR_ZERO, ("privleak", "agg_value")),
    *(MetricInfo(f"privleak_{key.removeprefix('mia_')}", f"PrivLeak {label}", f"PrivLeak ({label}, %)",
                 f"MUSE's PrivLeak of the {label} attack, in % (< 0: still leaks, > 0: over-unlearned)", NEAR_ZERO,
                 ("privleak", "by_attack", key))
      for key, label in ATTACKS.items() if key != HEADLINE_ATTACK),
)
BY_KEY: dict[str, MetricInfo] = {m.key: m for m in METRICS}
#: what the paired comparison of two models judges
COMPARED = ("forget_quality", "model_utility", "privleak")
#: the nine components of model utility, in the benchmark's order
UTILITY_KEYS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)
