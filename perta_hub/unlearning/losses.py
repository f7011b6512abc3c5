"""The unlearning losses, as pure functions of logits and labels (no model, no Trainer).

Definitions of the reference framework (open-unlearning, ``src/trainer/unlearn/`` and ``src/trainer/utils.py``):

- token NLL: labels are shifted by one (position ``t`` predicts label ``t + 1``); ``-100`` is ignored, so
  only the answer tokens count (the prompt is masked by :mod:`perta_hub.data`).
- **GradAscent**: ``L = -mean_NLL(forget)``, the mean over every answer token of the batch (what
  ``model(**inputs).loss`` returns).
- **GradDiff**: ``L = gamma * (-mean_NLL(forget)) + alpha * mean_NLL(retain)`` (``alpha`` is ``retain_weight``
  here: perta-hub's alpha is the task-arithmetic step).
- **NPO**: with ``logp`` the *sum* of the answer tokens' log-probabilities of each forget sequence under the
  model and ``logp_ref`` under the frozen reference (the target),
  ``L_npo = mean_batch( -(2 / beta) * logsigmoid(-beta * (logp - logp_ref)) )``;
  ``L = gamma * L_npo + retain_weight * mean_NLL(retain)`` (the retain term only when retain data is given).

Shapes: ``logits`` [batch, seq, vocab] (any float dtype; the losses are computed in float32), ``labels``
[batch, seq] int64. Every function returns a 0-dim float32 tensor.
"""

from __future__ import annotations

from typing import Any

from perta_hub.data.encoding import IGNORE_INDEX


def _shifted(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Logits at positions 0..T-2 and the labels they predict (positions 1..T-1)."""
    return logits[..., :-1, :].float(), labels[..., 1:]


def token_nll(logits: Any, labels: Any) -> Any:
    """Per-token NLL [batch, seq - 1] (nats), 0 where the label is ignored."""
    import torch.nn.functional as F

    shift_logits, shift_labels = _shifted(logits, labels)
    return F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")


def mean_nll(logits: Any, labels: Any) -> Any:
    """Mean NLL over every answer token of the batch (nats per token); the causal-LM ``loss``."""
    nll = token_nll(logits, labels)
    count = (labels[..., 1:] != IGNORE_INDEX).sum().clamp(min=1)
    return nll.sum() / count


def sequence_nll(logits: Any, labels: Any) -> Any:
    """Sum of the answer tokens' NLL of each sequence [batch] (nats) = ``-logp`` of the answer."""
    return token_nll(logits, labels).sum(dim=-1)


def ga_loss(forget_logits: Any, forget_labels: Any) -> Any:
    """GradAscent: ``-mean_NLL(forget)``."""
    return -mean_nll(forget_logits, forget_labels)


def grad_diff_loss(forget_logits: Any, forget_labels: Any, retain_logits: Any, retain_labels: Any, *,
                   gamma: float = 1.0, retain_weight: float = 1.0) -> Any:
    """GradDiff: ``gamma * (-mean_NLL(forget)) + retain_weight * mean_NLL(retain)``."""
    return gamma * ga_loss(forget_logits, forget_labels) + retain_weight * mean_nll(retain_logits, retain_labels)


def npo_forget_loss(seq_nll: Any, ref_seq_nll: Any, beta: float) -> Any:
    """NPO's forget term from per-sequence NLLs [batch] of the model and of the frozen reference.

    ``logp - logp_ref = -(seq_nll - ref_seq_nll)``; the loss is
    ``mean(-(2 / beta) * logsigmoid(-beta * (logp - logp_ref)))``. Its gradient is
    ``2 * sigmoid(beta * (logp - logp_ref)) * grad(seq_nll)`` per sequence: GA's direction on the summed NLL,
    each sequence weighted by how far it already moved; as ``beta -> 0`` every weight tends to 1 (= GA on the
    per-sequence summed NLL).
    """
    import torch.nn.functional as F

    log_ratio = -(seq_nll.float() - ref_seq_nll.detach().float())
    return (-(2.0 / beta) * F.logsigmoid(-beta * log_ratio)).mean()


def npo_loss(forget_logits: Any, forget_labels: Any, ref_forget_logits: Any, *, beta: float = 0.1,
             gamma: float = 1.0, retain_logits: Any = None, retain_labels: Any = None,
             retain_weight: float = 1.0) -> Any:
    """NPO: ``gamma * L_npo`` (+ ``retain_weight * mean_NLL(retain)`` when retain logits are given)."""
    loss = gamma * npo_forget_loss(sequence_nll(forget_logits, forget_labels),
                                   sequence_nll(ref_forget_logits, forget_labels), beta)
    if retain_logits is not None:
        loss = loss + retain_weight * mean_nll(retain_logits, retain_labels)
    return loss
