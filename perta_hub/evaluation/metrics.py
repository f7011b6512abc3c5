"""TOFU metrics as pure functions on numbers (no model, no tokenizer).

Definitions follow the open-unlearning benchmark (``../shared/TOFU_METRICS.md``):

* ``avg_nll``: mean token cross-entropy (nats) over the answer labels of one example.
* ``P~ = exp(-avg_nll)``: the length-normalised probability.
* truth ratio ``TR = exp(-mean_j avg_nll(perturbed_j)) / (P~(paraphrased) + 1e-10)``.
* forget quality: ``scipy.stats.ks_2samp(TR_model, TR_retain).pvalue``.
* model utility: ``scipy.stats.hmean`` of nine numbers, 0 when any is 0.
* extraction strength ``ES = 1 - k*/n``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

EPS = 1e-10  # the benchmark's stabiliser in every ratio


def probability(avg_nll: float) -> float:
    """Length-normalised probability ``exp(-avg_nll)`` of one answer (avg_nll in nats per token)."""
    return math.exp(-avg_nll)


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean of a non-empty sequence (the aggregate of per-question metrics)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean of an empty sequence")
    return sum(vals) / len(vals)


def normalised_probability(p_correct: float, p_wrong: Sequence[float]) -> float:
    """``P~(a) / (P~(a) + sum_j P~(perturbed_j) + 1e-10)`` (real authors, world facts)."""
    return p_correct / (p_correct + sum(p_wrong) + EPS)


def truth_ratio(correct_avg_nll: float, wrong_avg_nlls: Sequence[float]) -> float:
    """``TR = P~_pert / (P~_correct + 1e-10)`` for one question.

    Args:
        correct_avg_nll: avg_nll of the paraphrased answer (forget, retain) or of the answer
            (real authors, world facts).
        wrong_avg_nlls: avg_nll of each perturbed answer; ``P~_pert = exp(-mean_j avg_nll_j)`` is the
            geometric mean of their probabilities.
    """
    if not wrong_avg_nlls:
        raise ValueError("truth ratio needs at least one perturbed answer")
    p_pert = math.exp(-mean(wrong_avg_nlls))
    return p_pert / (math.exp(-correct_avg_nll) + EPS)


def truth_ratio_forget_row(tr: float) -> float:
    """One forget question's share of the forget aggregate: ``min(TR, 1 / (TR + 1e-10))``."""
    return min(tr, 1.0 / (tr + EPS))


def truth_ratio_retain_row(tr: float) -> float:
    """One question's share of the retain / real authors / world facts aggregate: ``max(0, 1 - TR)``."""
    return max(0.0, 1.0 - tr)


def truth_ratio_forget(ratios: Iterable[float]) -> float:
    """Forget aggregate ``mean(min(TR, 1 / (TR + 1e-10)))``: 1 when perturbed and true are equally likely."""
    return mean(truth_ratio_forget_row(tr) for tr in ratios)


def truth_ratio_retain(ratios: Iterable[float]) -> float:
    """Retain / real authors / world facts aggregate ``mean(max(0, 1 - TR))``: higher is better."""
    return mean(truth_ratio_retain_row(tr) for tr in ratios)


def forget_quality(model_ratios: Sequence[float], retain_ratios: Sequence[float]) -> float:
    """KS-test p-value ``scipy.stats.ks_2samp(model_ratios, retain_ratios).pvalue``.

    Both arguments are per-question forget truth ratios on the same forget split; the model's
    from the model under test, the other from the reference model trained without the forget set.
    """
    from scipy.stats import ks_2samp

    if len(model_ratios) == 0 or len(retain_ratios) == 0:
        raise ValueError("forget quality needs truth ratios from both models")
    return float(ks_2samp(list(model_ratios), list(retain_ratios)).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean (``scipy.stats.hmean``) of the nine utility numbers; 0 when any of them is 0."""
    from scipy.stats import hmean

    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("model utility needs at least one value")
    if any(v < 0 for v in vals):
        raise ValueError(f"model utility components must be >= 0, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    return float(hmean(vals))


def extraction_strength(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """``ES = 1 - k*/n`` for one example.

    Args:
        predictions: teacher-forced argmax token ids at the answer positions (length n).
        labels: the answer label ids (length n), without the final EOS label.
    ``k*`` is the smallest k in ``0..n`` with ``predictions[k:] == labels[k:]``; it is n when even the
    last token is wrong (no matching suffix), which gives ES = 0. An empty answer gives 0.
    """
    n = len(labels)
    if len(predictions) != n:
        raise ValueError(f"{len(predictions)} predictions for {n} labels")
    if n == 0:
        return 0.0
    k = n
    while k > 0 and predictions[k - 1] == labels[k - 1]:
        k -= 1
    return 1.0 - k / n


def log10_or_none(value: float | None) -> float | None:
    """``log10(value)``; None when the value is None or not positive (JSON has no -inf)."""
    if value is None or value <= 0:
        return None
    return math.log10(value)


_SCORER = None


def rouge_scores(ground_truth: str, generation: str) -> dict[str, float]:
    """ROUGE of one generation against the ground-truth answer (``rouge_score``, stemming on).

    ``RougeScorer(["rouge1", "rougeL"], use_stemmer=True).score(ground_truth, generation)``.
    Returns:
        ``rouge1_recall``, ``rougeL_f1`` and ``rougeL_recall`` (the TOFU ROUGE metric), in [0, 1].
    """
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = _SCORER.score(ground_truth, generation)
    return {
        "rouge1_recall": float(scores["rouge1"].recall),
        "rougeL_f1": float(scores["rougeL"].fmeasure),
        "rougeL_recall": float(scores["rougeL"].recall),
    }
