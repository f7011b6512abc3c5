"""Membership-inference attacks (MIA) and MUSE's PrivLeak, as pure functions on numbers.

Members are the forget split's question/answer pairs, non-members TOFU's holdout split of the same size. Every
attack scores one example from its teacher-forced answer tokens (the answer given the question prompt, the
same encoding as the TOFU probabilities); here every score is oriented so that **higher means "member"**, and
an attack's AUC is the ROC AUC of members (positive class) against non-members.

Definitions read from open-unlearning (github.com/locuslab/open-unlearning, commit
``d3d7cf9e6b3c125d16687d4232680d8d83548f1a``: ``src/evals/metrics/mia/{loss,zlib,min_k,min_k_plus_plus,utils}.py``,
``src/evals/metrics/utils.py`` ``tokenwise_logprobs`` / ``tokenwise_vocab_logprobs``,
``src/evals/metrics/privacy.py`` ``privleak``) and MUSE (github.com/swj0419/muse_bench, commit
``fcd6651da8bcf34744fb9a1cc69bb856ab3eb277``: ``metrics/privleak.py``, ``eval.py``):

* LOSS: ``-avg_nll`` over all answer labels (open-unlearning scores ``avg_loss``, higher = non-member).
* zlib: ``-avg_nll / len(zlib.compress(text.encode("utf-8")))``, ``text`` = the answer labels decoded with
  ``skip_special_tokens=True`` (open-unlearning's ``extract_target_texts_from_processed_data``).
* Min-K%: mean of the ``max(1, int(n * k))`` lowest token log-probabilities of the answer labels **without the
  last one** (the end-of-turn / EOS label, which open-unlearning's ``tokenwise_logprobs`` drops); 0 for an
  empty list, as open-unlearning.
* Min-K%++: per token ``(log p(x_t) - mu_t) / sqrt(max(var_t, 1e-6))`` with ``mu_t = sum_z p(z) log p(z)``
  and ``var_t = sum_z p(z) log p(z)^2 - mu_t^2`` under the model's next-token distribution at that position;
  then the Min-K% mean of these.
* AUC: ``roc_auc_score`` with ties counted one half, equal to open-unlearning's ``mia_*`` ``agg_value``
  (they label the holdout 1 and score "higher = non-member"; the two flips cancel).
* PrivLeak: ``(AUC - AUC_retain) / AUC_retain * 100`` with the AUCs above (forget rows = members = positive),
  as issue 24 defines it: **0 = as private as the retain model, > 0 = the attack tells the forget set from
  unseen data better than on the retain model (the model still leaks: under-unlearning; a memorised target
  with AUC 1 against a retain model at 0.5 gives +100), < 0 = worse than on the retain model (the forget set
  now stands out as *less* likely: over-unlearning)**. MUSE's code and open-unlearning's ``privleak`` score
  the holdout as the positive class, i.e. use ``1 - AUC`` in the same formula, so their published numbers have
  the other sign and another denominator: ``muse = ((1 - a) - (1 - r)) / (1 - r) * 100`` for the same ``a``,
  ``r`` (a memorised target is near -100 there). :func:`muse_privleak` converts, for comparison with papers.

The per-token values come from :func:`perta_hub.evaluation.scoring.score` (``token_stats=True``), computed in
float32 from the logits of the one forward pass that also gives the probabilities.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

#: attack name (the JSON key, as open-unlearning's) -> short label
ATTACKS = {"mia_loss": "LOSS", "mia_zlib": "zlib", "mia_min_k": "Min-K%", "mia_min_k_plus_plus": "Min-K%++"}
#: the attack whose PrivLeak is the headline ``privleak`` (open-unlearning's ``privleak`` uses Min-K%, k = 0.4)
HEADLINE_ATTACK = "mia_min_k"
#: open-unlearning's k of both Min-K attacks (fraction of the answer tokens)
DEFAULT_K = 0.4
#: Min-K%++'s floor on the per-token variance (open-unlearning's ``torch.clamp(sigma, min=1e-6)``)
MIN_VARIANCE = 1e-6
#: PrivLeak's stabiliser (open-unlearning's ``ref + 1e-10``)
EPS = 1e-10
#: what the ``score`` of every per-row MIA value means (written into the JSON)
ORIENTATION = "higher = more likely a member"


def zlib_entropy(text: str) -> int:
    """Bytes of ``zlib.compress(text.encode("utf-8"))`` (Carlini et al., 2021)."""
    return len(zlib.compress(text.encode("utf-8")))


def loss_score(avg_nll: float) -> float:
    """LOSS attack: ``-avg_nll`` (nats per answer token); members have lower loss."""
    return -avg_nll


def zlib_score(avg_nll: float, text: str) -> float:
    """zlib attack: ``-avg_nll / zlib_entropy(text)`` (``text``: the decoded answer labels)."""
    return -avg_nll / zlib_entropy(text)


def min_k_mean(values: Sequence[float], k: float) -> float:
    """Mean of the ``max(1, int(len(values) * k))`` smallest values; 0.0 for no values."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    if len(values) == 0:
        return 0.0
    n = max(1, int(len(values) * k))
    return sum(sorted(values)[:n]) / n


def min_k_score(token_logprobs: Sequence[float], k: float = DEFAULT_K) -> float:
    """Min-K% attack (Shi et al., 2023) on one answer's label log-probabilities (nats), the final label included
    in the argument and left out here (as open-unlearning)."""
    return min_k_mean(list(token_logprobs)[:-1], k)


def min_k_plus_plus_score(token_logprobs: Sequence[float], mu: Sequence[float], var: Sequence[float],
                          k: float = DEFAULT_K) -> float:
    """Min-K%++ attack (Zhang et al., 2024): Min-K% of ``(log p - mu) / sqrt(max(var, 1e-6))`` per token.

    Args:
        token_logprobs, mu, var: per answer label (length n, the final one left out here): the label's
            log-probability, the mean and the variance of the log-probability under the model's next-token
            distribution at that position (nats, nats^2).
    """
    if not len(token_logprobs) == len(mu) == len(var):
        raise ValueError(f"lengths differ: {len(token_logprobs)} log-probs, {len(mu)} means, {len(var)} variances")
    z = [(lp - m) / max(v, MIN_VARIANCE) ** 0.5 for lp, m, v in zip(token_logprobs, mu, var, strict=True)]
    return min_k_mean(z[:-1], k)


def attack_scores(avg_nll: float, text: str, token_logprobs: Sequence[float], mu: Sequence[float],
                  var: Sequence[float], k: float = DEFAULT_K) -> dict[str, float]:
    """The four attacks' scores of one example (keys of :data:`ATTACKS`), higher = member."""
    return {"mia_loss": loss_score(avg_nll), "mia_zlib": zlib_score(avg_nll, text),
            "mia_min_k": min_k_score(token_logprobs, k),
            "mia_min_k_plus_plus": min_k_plus_plus_score(token_logprobs, mu, var, k)}


def auc(members: Any, nonmembers: Any) -> Any:
    """ROC AUC of members (positive) against non-members: ``P(score_member > score_nonmember)``, ties 1/2.

    ``U / (n1 * n0)`` with ``U`` the Mann-Whitney statistic of the members (``scipy.stats.mannwhitneyu``,
    midranks for ties). Args: 1-D sequences, or arrays ``[..., n1]`` and ``[..., n0]`` (one AUC per leading
    index: many bootstrap resamples at once). Returns a float, or an array of the leading shape.
    """
    import numpy as np
    from scipy.stats import mannwhitneyu

    x, y = np.asarray(members, dtype=float), np.asarray(nonmembers, dtype=float)
    if x.shape[-1] == 0 or y.shape[-1] == 0:
        raise ValueError("AUC needs at least one member and one non-member")
    u = mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", axis=-1).statistic
    value = np.asarray(u, dtype=float) / (x.shape[-1] * y.shape[-1])
    return float(value) if value.ndim == 0 else value


def privleak(model_auc: Any, retain_auc: Any) -> Any:
    """PrivLeak in percent: ``(a - r) / (r + 1e-10) * 100`` (issue 24's definition).

    ``a``, ``r``: AUCs (members positive) of the model and of the retain model on the same splits; floats or
    arrays. 0 = as private as the retain model; positive = leaks membership; negative = over-unlearned.
    """
    return (model_auc - retain_auc) / (retain_auc + EPS) * 100


def muse_privleak(model_auc: Any, retain_auc: Any) -> Any:
    """The same two AUCs as MUSE's code and open-unlearning's ``privleak`` report them (holdout positive:
    ``((1-a) - (1-r)) / ((1-r) + 1e-10) * 100``; negative = leaks), to set perta-hub's numbers beside papers'."""
    return ((1 - model_auc) - (1 - retain_auc)) / ((1 - retain_auc) + EPS) * 100
