"""Options of ``perta-hub compare`` (the defaults of :func:`perta_hub.evaluation.bootstrap.compare_files`)."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Options, Range, option
from perta_hub.options.common import FILE


@dataclass(frozen=True)
class CompareOptions(Options):
    """The resampling and where the comparison goes."""

    command = "compare"

    bootstrap: int = option("--bootstrap", type=Range(int, min=1), default=1000,
                            help="Paired bootstrap resamples of the question rows (the same rows for A and B).")
    seed: int = option("--seed", type=Range(int, min=0), default=0, help="Seed of the resampling.")
    output: str | None = option("-o", "--output", type=FILE,
                                help="JSON of the comparison (values, differences, intervals, verdicts) "
                                     "[default: not written].")
    overwrite: bool = option("--overwrite", is_flag=True, default=False,
                             help="Replace an existing -o file [default: refuse it].")


COMPARE = CompareOptions()
