"""Options of ``perta-hub unlearn`` besides the training options (:mod:`perta_hub.options.training`), and the
defaults of :func:`perta_hub.unlearning.command.unlearn`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.errors import InputError
from perta_hub.options.base import Choice, Options, Range, option
from perta_hub.options.common import FOLDER, allow_pickle, data_spec_help, max_shard_size
from perta_hub.unlearning.methods import METHODS, UNLEARN_METHODS, method_help, using

DATA_HELP = " of question/answer rows."


@dataclass(frozen=True)
class UnlearnOptions(Options):
    """The method, its weights, the data, the output folder and how the weights are written.

    Besides the declared ranges, the method's own rules (:data:`perta_hub.unlearning.methods.UNLEARN_METHODS`):
    the retain data it needs or refuses, and only the weights its loss has.
    """

    command = "unlearn"

    method: str | None = option("--method", type=Choice(METHODS), required=True, help=method_help())
    forget: str | None = option("--forget", required=True,
                                help="The data to forget: " + data_spec_help("forget01") + DATA_HELP)
    retain: str | None = option("--retain", help="The data to keep (gd; optional for npo; TOFU: retain99 beside forget01, "
                                     "retain95 beside forget05, retain90 beside forget10): "
                                     + data_spec_help("retain99") + DATA_HELP)
    out_dir: str | None = option(
        "-o", "--output", type=FOLDER, required=True,
        help="Model folder to create (refused if it holds anything else; returned as is if it already "
             "holds this exact run).")
    gamma: float = option("--gamma", type=Range(float, min=0, min_open=True), default=1.0,
                          help="Weight of the forget term (gd, npo; open-unlearning gamma).")
    retain_weight: float | None = option(
        "--retain-weight", type=Range(float, min=0), needs="retain",
        help="Weight of the retain NLL (open-unlearning alpha) [default: 1 with --retain].")
    beta: float = option("--beta", type=Range(float, min=0, min_open=True), default=0.1,
                         help="NPO's inverse temperature (open-unlearning NPO: 0.1).")
    max_shard_size: int | str = max_shard_size("weight")
    allow_pickle: bool = allow_pickle("model")

    def check(self) -> None:
        """The method's rules: retain data where it is needed or refused, a weight only where the loss has it."""
        if self.method is None:  # the bare defaults (UNLEARN)
            return
        spec = UNLEARN_METHODS[self.method]
        if spec.retain == "needed" and not self.retain:
            raise InputError(f"--method {spec.code} ({spec.name}) needs --retain DATA (the retain term)")
        if spec.retain == "refused" and self.retain:
            with_retain = " or ".join(m.code for m in UNLEARN_METHODS.values() if m.retain == "needed")
            raise InputError(f"--method {spec.code} uses only the forget data; drop --retain/--retain-weight, or use "
                             f"--method {with_retain}")
        for weight in ("gamma", "beta"):
            if weight not in spec.weights and getattr(self, weight) != self.default(weight):
                raise InputError(f"--{weight} only applies to --method {' or '.join(using(weight))}")

    @property
    def retain_weight_in_effect(self) -> float:
        """The retain NLL's weight: 0 without retain data, else ``retain_weight`` (default 1)."""
        return 0.0 if not self.retain else (1.0 if self.retain_weight is None else self.retain_weight)


UNLEARN = UnlearnOptions()
