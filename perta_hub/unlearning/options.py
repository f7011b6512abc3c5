"""The unlearning recipe: :class:`UnlearnTrainingOptions` (the fine-tuning options with the reference
framework's unlearning defaults) and the method names.

Defaults (open-unlearning, see ``docs/unlearn.md`` for each source): 10 epochs, lr 1e-5 (AdamW, linear decay
after a 1-epoch warmup), effective batch 32, weight decay 0.01; GradDiff/NPO ``gamma = 1``, retain weight
(the reference's ``alpha``) 1; NPO ``beta = 0.1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from perta_hub.errors import InputError
from perta_hub.options.base import Range, option
from perta_hub.training.options import TrainingOptions

#: ``ga`` GradAscent, ``gd`` GradDiff, ``npo`` Negative Preference Optimization
METHODS = ("ga", "gd", "npo")
METHOD_NAMES = {"ga": "GradAscent", "gd": "GradDiff", "npo": "NPO"}


@dataclass(frozen=True)
class UnlearnTrainingOptions(TrainingOptions):
    """:class:`~perta_hub.training.options.TrainingOptions` with the unlearning defaults (10 epochs).

    ``epochs`` count passes over the *forget* data (the retain data is sampled beside it, one retain
    example per forget example, as the reference's ``ForgetRetainDataset`` with the forget set as anchor).
    """

    epochs: float = option("--epochs", type=Range(float, min=0, min_open=True), default=10.0,
                           help="Passes over the forget data (open-unlearning TOFU unlearning: 10); a fraction stops "
                                "part-way through the last one.")

    def check(self) -> None:
        super().check()
        if self.lora_rank is not None:
            raise InputError("unlearn trains the whole model; --lora-rank is not supported here (drop it)")


def resolve_unlearn_options(options: TrainingOptions | None, overrides: dict[str, Any]) -> UnlearnTrainingOptions:
    """``options`` (default: :class:`UnlearnTrainingOptions`) with single fields replaced; unknown names refused."""
    base = asdict(options or UnlearnTrainingOptions())
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise InputError(f"unknown training option(s) {', '.join(unknown)}; see UnlearnTrainingOptions")
    base.update(overrides)
    return UnlearnTrainingOptions(**base)


def check_method(method: str, retain: str | None, gamma: float, beta: float, retain_weight: float | None) -> float:
    """Refuse impossible method settings; returns the retain weight in effect (0 without retain data)."""
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not gamma > 0:
        raise InputError(f"--gamma (the forget term's weight) must be > 0, got {gamma}")
    if not beta > 0:
        raise InputError(f"--beta must be > 0, got {beta}")
    if retain_weight is not None and retain_weight < 0:
        raise InputError(f"--retain-weight must be >= 0, got {retain_weight}")
    if method == "gd" and not retain:
        raise InputError("--method gd (GradDiff) needs --retain DATA (the retain term)")
    if method == "ga" and (retain or retain_weight is not None):
        raise InputError("--method ga uses only the forget data; drop --retain/--retain-weight, or use --method gd")
    if method == "ga" and gamma != 1.0:
        raise InputError("--gamma only applies to gd and npo (GradAscent's loss has no weight)")
    if method != "npo" and beta != 0.1:
        raise InputError("--beta only applies to --method npo")
    if retain_weight is not None and not retain:
        raise InputError("--retain-weight needs --retain DATA")
    return 0.0 if not retain else (1.0 if retain_weight is None else retain_weight)
