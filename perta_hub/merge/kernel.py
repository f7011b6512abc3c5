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

Each merged tensor also gives its share of the **step norm** ``||alpha w ⊙ tau|| / ||tau||`` (over every tensor of
the task vector; plain task-vector negation has ``w = 1``): ``||w ⊙ tau||^2`` and ``||tau||^2``, two dot products
per chunk while it is in cache, added up over the tensors by :class:`StepNorm`. :func:`zero_weight_share` is the
check that refuses a weight map whose ``w`` is below :data:`ZERO_WEIGHT` everywhere (the merge would write the
target back unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from perta_hub.errors import CheckpointError, NonFiniteError, PertaError
from perta_hub.merge.math import (
    CHUNK_ELEMENTS,
    all_finite,
    combine_weights,
    importances_valid,
    merge_chunked,
    merge_whole,
    step_sums,
)

#: the values of a weight map's ``unrestricted`` key: what happens to the tensors a ``--params`` map leaves out
UNRESTRICTED = ("w=0", "w=1")
#: a weight ``w`` below this counts as zero: its parameter moves by less than a millionth of the task vector's
#: step (below bf16's resolution of any weight of the same scale). A map whose every weight is below it is refused
ZERO_WEIGHT = 1e-6
#: a map with at least this share of zero weights (but not all) is merged with a one-line warning
WARN_ZERO_SHARE = 0.5
#: values of ``w`` per tensor that :func:`zero_weight_share` estimates the share from (seeded, as the summary's)
ZERO_SAMPLE = 2000


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
        norms: ``(||w ⊙ tau||^2, ||tau||^2)`` of this tensor (fp32 sums per chunk added in float64); ``(0, 0)``
            when the task vector's tensor was not given.
    """

    tensors: list[Any]
    error: PertaError | None = None
    norms: tuple[float, float] = (0.0, 0.0)

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
            :func:`untouched` says the tensor is the target's own (given anyway, only its norm is taken).
        alphas: one or more scales.
        weighting: the weight map's combination and rest rule; None: no weight map, ``w = 1``.
        importances: ``(I_f, I_r)`` of this tensor (same shape), or None when the weight map does not cover it
            (or there is none).
        empty: ``(shape, dtype) -> tensor`` for CPU results (e.g. ``BufferPool.empty``; default ``torch.empty``).
    Returns:
        :class:`Merged`: the results, the tensor's squared norms and, when something is not finite, the
        diagnosis. On CUDA tensors the whole-tensor path runs; on CPU, the chunked one.
    """
    import torch

    alphas = list(alphas)
    cuda = theta.device.type == "cuda"
    if empty is None:
        empty = lambda shape, dtype: torch.empty(shape, dtype=dtype)  # noqa: E731
    if untouched(weighting, importances is not None):  # w = 0: a bit-identical copy of the target's tensor
        copies = [theta.clone() if cuda else empty(tuple(theta.shape), theta.dtype).copy_(theta) for _ in alphas]
        if delta is None:
            return Merged(copies)
        tau_sq = float(torch.dot(delta.reshape(-1).float(), delta.reshape(-1).float())) if cuda \
            else step_sums(delta, None)[1]
        return Merged(copies, norms=(0.0, tau_sq))
    if delta is None:
        raise ValueError(f"{name}: the task vector's tensor is needed (the tensor is not left unchanged)")
    combination = None
    if importances is not None:
        if weighting is None:
            raise ValueError(f"{name}: importances without a weighting (p, lam, eps)")
        combination = (importances[0], importances[1], weighting.p, weighting.lam, weighting.eps)
    if cuda:
        results, finite, norms = merge_whole(theta, delta, alphas, combination)
    else:
        results, finite, norms = merge_chunked(theta, delta, alphas, combination, empty)
    if finite:
        return Merged(results, norms=norms)
    return Merged(results, diagnose(name, theta, delta, combination, alphas, results), norms)


@dataclass
class StepNorm:
    """The step norm ``||alpha w ⊙ tau|| / ||tau||`` of a merge, summed tensor by tensor as the kernel merges.

    Attributes:
        weighted_sq: ``||w ⊙ tau||^2`` over the tensors added (float64).
        tau_sq: ``||tau||^2`` over the tensors added (float64).
        names: the tensors added (a resumed merge adds the rest afterwards).
    """

    weighted_sq: float = 0.0
    tau_sq: float = 0.0
    names: set[str] = field(default_factory=set)

    def add(self, name: str, norms: tuple[float, float]) -> None:
        """Add one tensor's ``(||w ⊙ tau||^2, ||tau||^2)`` (:attr:`Merged.norms`)."""
        self.weighted_sq += norms[0]
        self.tau_sq += norms[1]
        self.names.add(name)

    @property
    def ratio(self) -> float:
        """``||w ⊙ tau|| / ||tau||`` (dimensionless; 1 for plain task-vector negation; 0 when tau is zero)."""
        return math.sqrt(self.weighted_sq / self.tau_sq) if self.tau_sq > 0 else 0.0

    def step(self, alpha: float) -> float:
        """``||alpha w ⊙ tau|| / ||tau||``, rounded to 6 significant digits (as recorded)."""
        return float(f"{abs(alpha) * self.ratio:.6g}")


def zero_weight_share(names: Iterable[str], forget: Callable[[str], Any], retain: Callable[[str], Any],
                      weighting: Weighting) -> float:
    """The share of a weight map's weights ``w`` below :data:`ZERO_WEIGHT`, at ``weighting``'s p, lam, eps.

    Estimated from :data:`ZERO_SAMPLE` seeded values per tensor (weighted by the tensor's size), so a sane map
    costs a few thousand reads per tensor; exactly 1.0 only when every weight of every tensor is below it (then
    checked on all of them, chunk by chunk, stopping at the first weight that is not).

    Args:
        names: the tensors the map covers; ``forget(name)`` / ``retain(name)`` return their importances (any
            float dtype and shape, on the CPU).
    Returns:
        a share in [0, 1].
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    names = list(names)
    zero = total = 0.0
    for name in names:
        f, r = forget(name).reshape(-1), retain(name).reshape(-1)
        if not f.numel():
            continue
        idx = torch.randint(0, f.numel(), (min(f.numel(), ZERO_SAMPLE),), generator=gen)
        w = combine_weights(f[idx], r[idx], weighting.p, weighting.lam, weighting.eps)
        zero += float((w < ZERO_WEIGHT).double().mean()) * f.numel()
        total += f.numel()
    share = zero / total if total else 0.0
    if share < 1.0:
        return share
    for name in names:  # every sampled weight is zero: look at all of them
        f, r = forget(name).reshape(-1), retain(name).reshape(-1)
        for start in range(0, f.numel(), CHUNK_ELEMENTS):
            part = slice(start, start + CHUNK_ELEMENTS)
            w = combine_weights(f[part], r[part], weighting.p, weighting.lam, weighting.eps)
            if bool((w >= ZERO_WEIGHT).any()):
                return math.nextafter(1.0, 0.0)  # not all: a share just below 1
    return 1.0


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
