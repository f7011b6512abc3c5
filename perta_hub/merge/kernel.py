"""The one merge kernel: ``theta - alpha * (w ⊙ tau)`` for one tensor, every alpha, and why it is not finite.

``apply`` (local and ``--stream``, through :meth:`perta_hub.merge.apply.PerTAMergeJob.combine`), ``tune``
(:meth:`perta_hub.tuning.in_place.InPlaceMerge.set_alpha`) and ``verify --recompute``
(:func:`perta_hub.verification.provenance.recompute_model`) all call :func:`merge_tensor`, so the rule for tensors
outside a restricted weight map, the CPU/CUDA path, the cast and the non-finite diagnosis are written once and
their bytes agree by construction.

The arithmetic itself is :func:`perta_hub.merge.math.merge_chunked` (CPU: cache-sized chunks, the soundness
check fused into the cast of each chunk) or :func:`~perta_hub.merge.math.merge_whole` (CUDA: whole-tensor
ops); the kernel picks by the device the tensors are on. A low-rank task vector reaches the kernel already
formed to its dense tensor (:func:`perta_hub.merge.low_rank.open_task_vector`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from perta_hub.errors import CheckpointError, NonFiniteError, PertaError
from perta_hub.merge.math import all_finite, combine_weights, importances_valid, merge_chunked, merge_whole

#: the values of a weight map's ``unrestricted`` key: what happens to the tensors a ``--params`` map leaves out
UNRESTRICTED = ("w=0", "w=1")


@dataclass(frozen=True)
class Weighting:
    """How a weight map's importances become ``w = I_f^p / (I_f^p + lam * I_r^p + eps)``, and the rule for the
    tensors the map does not cover: ``unrestricted="w=0"`` leaves them as the target's (bit for bit);
    ``"w=1"`` or None (a map made before the key existed) gives them plain task arithmetic (``w = 1``)."""

    p: float
    lam: float
    eps: float
    unrestricted: str | None = None

    @property
    def rest_unchanged(self) -> bool:
        return self.unrestricted == "w=0"


def untouched(weighting: Weighting | None, in_map: bool) -> bool:
    """Whether a tensor is the target's own, unchanged (``w = 0`` outside a restricted map): its task-vector
    tensor is then not read at all. ``in_map``: whether the weight map holds importances for the tensor."""
    return weighting is not None and weighting.rest_unchanged and not in_map


@dataclass(frozen=True)
class Merged:
    """The kernel's answer for one tensor.

    Attributes:
        tensors: one result per alpha, in the target's dtype and shape, on the inputs' device.
        error: None when every input and result is finite (and the importances >= 0); else the precise
            diagnosis (which input, which importance group, which parameters or which alpha), to raise.
    """

    tensors: list[Any]
    error: PertaError | None = None

    def checked(self) -> list[Any]:
        """The results; raises :attr:`error` when there is one."""
        if self.error is not None:
            raise self.error
        return self.tensors


def merge_tensor(name: str, theta: Any, delta: Any | None, alphas: Sequence[float], *,
                 weighting: Weighting | None = None, importances: tuple[Any, Any] | None = None,
                 empty: Callable[[tuple[int, ...], Any], Any] | None = None) -> Merged:
    """``theta - alpha * (w ⊙ delta)`` for each alpha, in fp32, cast to ``theta``'s dtype.

    Args:
        name: the tensor's name (for the diagnosis).
        theta: the target's tensor (any float dtype; on CPU or a CUDA device).
        delta: the task vector's dense tensor, same shape (any float dtype, same device); may be None when
            :func:`untouched` says the tensor is the target's own.
        alphas: one or more scales.
        weighting: the weight map's combination and rest rule; None: no weight map, ``w = 1``.
        importances: ``(I_f, I_r)`` of this tensor (same shape), or None when the weight map does not cover it
            (or there is none).
        empty: ``(shape, dtype) -> tensor`` for CPU results (e.g. ``BufferPool.empty``; default ``torch.empty``).
    Returns:
        :class:`Merged`: the results and, when something is not finite, the diagnosis. On CUDA tensors the
        whole-tensor path runs; on CPU, the chunked one.
    """
    import torch

    alphas = list(alphas)
    cuda = theta.device.type == "cuda"
    if empty is None:
        empty = lambda shape, dtype: torch.empty(shape, dtype=dtype)  # noqa: E731
    if untouched(weighting, importances is not None):  # w = 0: a bit-identical copy of the target's tensor
        return Merged([theta.clone() if cuda else empty(tuple(theta.shape), theta.dtype).copy_(theta)
                       for _ in alphas])
    if delta is None:
        raise ValueError(f"{name}: the task vector's tensor is needed (the tensor is not left unchanged)")
    combination = None
    if importances is not None:
        if weighting is None:
            raise ValueError(f"{name}: importances without a weighting (p, lam, eps)")
        combination = (importances[0], importances[1], weighting.p, weighting.lam, weighting.eps)
    if cuda:
        results, finite = merge_whole(theta, delta, alphas, combination)
    else:
        results, finite = merge_chunked(theta, delta, alphas, combination, empty)
    if finite:
        return Merged(results)
    return Merged(results, diagnose(name, theta, delta, combination, alphas, results))


def diagnose(name: str, theta: Any, delta: Any, combination: tuple | None, alphas: list[float],
             results: list[Any]) -> PertaError:
    """Say which input (or which alpha's result) of tensor ``name`` is not finite (the kernel's slow path,
    run only when the fused check of the merge failed)."""
    if not all_finite(theta):
        return NonFiniteError(f"tensor {name} of the model has NaN or Inf; it cannot be unlearned as is")
    if not all_finite(delta):
        return NonFiniteError(f"tensor {name} of the task vector has NaN or Inf; re-create the task vector")
    if combination is not None:
        for label, importance in (("importance_forget", combination[0]), ("importance_retain", combination[1])):
            if not all_finite(importance):
                return NonFiniteError(f"tensor {name} of the weight map has NaN or Inf in {label}; "
                                      "re-create the weight map")
            if not importances_valid(importance):
                return CheckpointError(f"tensor {name} of the weight map has a negative importance in {label} "
                                       f"({float(importance.min())}); importances must be >= 0: re-create the weight map")
        if not all_finite(delta.float() * combine_weights(*combination)):
            return NonFiniteError(f"tensor {name}: the weight map's importances give NaN or Inf weights with "
                                  f"p={combination[2]}, lam={combination[3]}, eps={combination[4]}; "
                                  "pass other --p/--lam/--eps")
    for alpha, result in zip(alphas, results, strict=True):
        if not all_finite(result):
            return NonFiniteError(f"tensor {name}: the merge with alpha {alpha} gives NaN or Inf in {result.dtype} "
                                  "(out of range for the model's dtype); use a smaller alpha")
    return NonFiniteError(f"tensor {name}: the merge gives NaN or Inf")
