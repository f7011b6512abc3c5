"""Options of ``perta-hub verify`` and the defaults of :func:`perta_hub.verification.verify`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Options, Range, option
from perta_hub.options.common import DEVICES, FILE, FOLDER


@dataclass(frozen=True)
class VerifyOptions(Options):
    """What to check besides integrity (always), and where the audit record goes."""

    command = "verify"

    recompute: bool = option(
        "--recompute", is_flag=True, default=False,
        help="Provenance: fetch the recorded inputs at their recorded revisions, recompute every tensor with the "
             "math of the command that wrote it and compare bit for bit [default: integrity and privacy only].")
    sample: int | None = option(
        "--sample", type=Range(int, min=1), metavar="N",
        help="Provenance on N tensors chosen at random (seeded, recorded in the report) instead of all of them.")
    seed: int | None = option("--seed", type=int,
                              help="Seed of --sample's choice [default: a fresh random seed, printed in the report].")
    privacy: bool = option(
        "--privacy/--no-privacy", default=True,
        help="Check that the forget-derived repos the record names are private and that the card quotes no "
             "forget data [default: --privacy].")
    device: str = option("--device", type=DEVICES, default="auto",
                         help="Where the recomputation's fp32 math runs, as `apply --device`.")
    report: str | None = option("--report", type=FILE, metavar="FILE",
                                help="Write the JSON audit record (checks, revisions, hashes, time, version, "
                                     "outcome) to FILE.")
    search: tuple[str, ...] = option(
        "--search", type=FOLDER, metavar="DIR", multiple=True, default=(),
        help="A folder where a local input that moved is looked for by content hash (DIR and the folders directly "
             "inside it), after its recorded path and the output's sibling folders; repeatable.")


VERIFY = VerifyOptions()
