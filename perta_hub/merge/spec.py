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

#: the flag that lets ``apply`` take alpha <= 0 (Python: ``allow_negative_alpha=True``)
ALLOW_NEGATIVE_ALPHA = "--allow-negative-alpha"
_ALLOW_REMEDY = f"pass {ALLOW_NEGATIVE_ALPHA} (Python: allow_negative_alpha=True) to do it anyway"


def _numbers(values: Any, option: str) -> list[float]:
    """Finite numbers, no repeats (``option`` names them in the error)."""
    numbers = []
    for a in values:
        try:
            if isinstance(a, bool):
                raise TypeError
            value = float(a)
        except (TypeError, ValueError):
            raise InputError(f"{option} must be a number, got {a!r}") from None
        if not math.isfinite(value):
            raise InputError(f"{option} must be finite, got {a!r}")
        numbers.append(value)
    if len(set(numbers)) != len(numbers):
        raise InputError(f"{option} values repeat: {numbers}")
    return numbers


def check_alphas(alphas: Any, *, allow_negative: bool = False, option: str = "--alpha",
                 remedy: str = _ALLOW_REMEDY) -> list[float]:
    """The one rule for alpha: finite numbers, at least one, no repeats, and each > 0 unless ``allow_negative``
    (alpha < 0 adds the forget data's knowledge back; alpha = 0 writes the target unchanged).

    ``option`` and ``remedy`` word the error for the caller (``tune``: its grid, which has no such flag).
    """
    if not alphas:
        raise InputError(f"give at least one {option}")
    values = _numbers(alphas, option)
    bad = [v for v in values if v <= 0]
    if bad and not allow_negative:
        raise InputError(f"{option} {bad[0]:g} is not > 0: a negative alpha adds the forget data's knowledge back "
                         f"and alpha 0 writes the target unchanged; {remedy}")
    return values


def check_steps(steps: Any) -> list[float]:
    """Step norms ``||alpha w ⊙ tau|| / ||tau||`` (``apply --step``): finite numbers > 0, no repeats."""
    values = _numbers(steps, "--step")
    bad = [v for v in values if v <= 0]
    if bad:
        raise InputError(f"--step {bad[0]:g} is not > 0: it is the norm ||alpha w*tau|| / ||tau|| of the step "
                         "(1 = the task vector's own)")
    return values


def requested(alphas: Any, steps: Any) -> dict[str, tuple[Any, ...]]:
    """The ``alphas`` and ``steps`` fields of a spec from a user's request: exactly one of the two given."""
    alphas, steps = tuple(alphas or ()), tuple(steps or ())
    if alphas and steps:
        raise InputError("--alpha and --step exclude each other: give the scale (--alpha) or the step norm "
                         "(--step), not both")
    if not alphas and not steps:
        raise InputError("give --alpha A (the scale of tau) or --step S (the step norm ||alpha w*tau|| / ||tau||)")
    return {"alphas": alphas, "steps": steps}


def alpha_folder(alpha: float) -> str:
    """Subfolder name for one alpha of a sweep (``alpha-0.7``, ``alpha-1.0``)."""
    return f"alpha-{float(alpha)}"


def step_folder(step: float) -> str:
    """Subfolder name for one step norm of a ``--step`` sweep (``step-0.5``)."""
    return f"step-{float(step)}"


@dataclass(frozen=True)
class MergeSpec:
    """The inputs and parameters of ``theta = theta_model - alpha * (w ⊙ tau)`` (where it is written is not
    part of it: an output folder is given beside it).

    Attributes:
        model: the target (folder, ``.safetensors`` file or Hub id ``org/name[@revision]``).
        task_vector: the task-vector artifact (folder or Hub id; dense or LoRA factors).
        weights: the weight-map artifact; None: ``w = 1`` (plain task-vector negation).
        alphas: the scales, checked on construction by :func:`check_alphas` (finite numbers, at least one, no
            repeats, > 0 unless ``allow_negative_alpha``; given as numbers or the command line's strings, stored
            as floats). Empty while ``steps`` waits for :meth:`at_steps`.
        p, lam, eps: override the weight map's recorded combination; None: the map's own.
        device: ``auto`` | ``cpu`` | ``cuda`` (where the fp32 math runs).
        max_shard_size: the output's shard limit (``5GB``, ``500MB``, bytes).
        allow_pickle: accept a ``.bin`` target.
        steps: ``apply --step``: the step norms ``||alpha w ⊙ tau|| / ||tau||`` asked for (> 0); the alphas are
            set from them by :meth:`at_steps` (one pass over the task vector and the weight map before merging).
        allow_negative_alpha: accept alpha <= 0 (``--allow-negative-alpha``).
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
    steps: tuple[float, ...] = ()
    allow_negative_alpha: bool = APPLY.allow_negative_alpha

    def __post_init__(self) -> None:
        steps = tuple(check_steps(self.steps))
        object.__setattr__(self, "steps", steps)
        if steps and not self.alphas:  # alphas still to be set from the steps (at_steps)
            return
        if steps and len(self.alphas) != len(steps):
            raise InputError("--alpha and --step exclude each other: give one of them")
        alphas = check_alphas(self.alphas, allow_negative=self.allow_negative_alpha)
        object.__setattr__(self, "alphas", tuple(alphas))

    @property
    def outputs(self) -> int:
        """The number of output folders (one per alpha, or per step)."""
        return len(self.steps or self.alphas)

    def folders(self, out_dir: str | Path) -> list[Path]:
        """The output folders: ``out_dir`` for one output; else ``out_dir/alpha-A`` (or ``out_dir/step-S``) each;
        none while the steps' alphas are not set."""
        out = Path(out_dir)
        if not self.alphas:
            return []
        if self.outputs == 1:
            return [out]
        if self.steps:
            return [out / step_folder(s) for s in self.steps]
        return [out / alpha_folder(a) for a in self.alphas]

    def planned(self) -> MergeSpec:
        """The spec to plan from headers (``--dry-run``, the disk check): before :meth:`at_steps`, the steps stand
        in for the alphas (a plan depends only on how many outputs there are, not on alpha)."""
        return self if self.alphas else dataclasses.replace(self, alphas=self.steps)

    def at_steps(self, ratio: float) -> MergeSpec:
        """The spec with its alphas set from its steps: ``alpha = step / ratio``.

        Args:
            ratio: ``||w ⊙ tau|| / ||tau||`` of this merge's task vector and weight map (1 without a map).
        Raises:
            InputError: the ratio is 0 (``w ⊙ tau`` is zero: no alpha reaches a step).
        """
        if not ratio > 0:
            raise InputError(f"||w*tau|| / ||tau|| is {ratio:g} for {self.task_vector}"
                             + (f" and {self.weights}" if self.weights is not None else "")
                             + ": no alpha reaches --step; check the task vector (is it zero?) and the weight map")
        return dataclasses.replace(self, alphas=tuple(s / ratio for s in self.steps))

    @classmethod
    def from_options(cls, model: str | Path, options: Any, **changes: Any) -> MergeSpec:
        """The spec of a command's options (:class:`~perta_hub.options.apply.ApplyOptions`, or
        :class:`~perta_hub.options.tune.TuneOptions` with ``weights`` and ``alphas`` given in ``changes``:
        tune's are a list of candidates and a search grid): every field of the spec read from the option of
        the same name."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "model"]
        values = {name: getattr(options, name) for name in names if name not in changes and hasattr(options, name)}
        if "alphas" not in changes:
            values.update(requested(values.get("alphas"), values.pop("steps", ())))
        return cls(model, **values, **changes)

    def replace(self, **changes: Any) -> MergeSpec:
        """A copy with some fields changed (e.g. one weight-map candidate of ``tune``, the chosen alpha)."""
        return dataclasses.replace(self, **changes)
