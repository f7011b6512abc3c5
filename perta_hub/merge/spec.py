"""What one merge reads and with which parameters: :class:`MergeSpec`, from the command line to every caller.

``apply`` (local, ``--stream``, ``--dry-run``), ``tune`` (its checks, the in-place search and the chosen model's
write), ``verify --recompute`` and the Python API all carry one ``MergeSpec`` instead of the merge's nine
arguments, and :class:`~perta_hub.merge.apply.PerTAMergeJob` takes nothing else; it is built from a command's
options in one place (:meth:`MergeSpec.from_options`), from a model's record (``verify``,
:func:`perta_hub.verification.provenance.recorded_spec`), or from the keyword arguments of
:func:`perta_hub.merge.apply.apply` / :func:`perta_hub.tuning.command.tune`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.options.apply import APPLY


def check_alphas(alphas: Any) -> list[float]:
    """Alphas must be finite numbers, at least one, no repeats."""
    if not alphas:
        raise InputError("give at least one --alpha")
    values = []
    for a in alphas:
        try:
            value = float(a)
        except (TypeError, ValueError) as err:
            raise InputError(f"--alpha must be a number, got {a!r}") from err
        if not math.isfinite(value):
            raise InputError(f"--alpha must be finite, got {a!r}")
        values.append(value)
    if len(set(values)) != len(values):
        raise InputError(f"--alpha values repeat: {values}")
    return values


@dataclass(frozen=True)
class MergeSpec:
    """The inputs and parameters of ``theta = theta_model - alpha * (w ⊙ tau)`` (where it is written is not
    part of it: an output folder is given beside it).

    Attributes:
        model: the target (folder, ``.safetensors`` file or Hub id ``org/name[@revision]``).
        task_vector: the task-vector artifact (folder or Hub id; dense or LoRA factors).
        weights: the weight-map artifact; None: ``w = 1`` (plain task-vector negation).
        alphas: the scales, checked on construction (finite numbers, at least one, no repeats; given as
            numbers or the command line's strings, stored as floats).
        p, lam, eps: override the weight map's recorded combination; None: the map's own.
        device: ``auto`` | ``cpu`` | ``cuda`` (where the fp32 math runs).
        max_shard_size: the output's shard limit (``5GB``, ``500MB``, bytes).
        allow_pickle: accept a ``.bin`` target.
    """

    model: str | Path
    task_vector: str | Path
    weights: str | Path | None = APPLY.weights
    alphas: tuple[float, ...] = (1.0,)
    p: float | None = APPLY.p
    lam: float | None = APPLY.lam
    eps: float | None = APPLY.eps
    device: str = APPLY.device
    max_shard_size: int | str = APPLY.max_shard_size
    allow_pickle: bool = APPLY.allow_pickle

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(check_alphas(self.alphas)))

    @classmethod
    def from_options(cls, model: str | Path, options: Any, **changes: Any) -> MergeSpec:
        """The spec of a command's options (:class:`~perta_hub.options.apply.ApplyOptions`, or
        :class:`~perta_hub.options.tune.TuneOptions` with ``weights`` and ``alphas`` given in ``changes``:
        tune's are a list of candidates and a search grid): every field of the spec read from the option of
        the same name."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "model"]
        values = {name: getattr(options, name) for name in names if name not in changes}
        return cls(model, **values, **changes)

    def replace(self, **changes: Any) -> MergeSpec:
        """A copy with some fields changed (e.g. one weight-map candidate of ``tune``, the chosen alpha)."""
        return dataclasses.replace(self, **changes)
