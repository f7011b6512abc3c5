"""Options every command shares (-q/-v) and field builders used by several commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perta_hub.errors import InputError
from perta_hub.options.base import Choice, Options, PathSpec, option

#: largest shard of anything perta-hub writes, unless --max-shard-size says otherwise
MAX_SHARD_SIZE = "5GB"
#: --device of the commands that run on one device of a kind
DEVICES = Choice(("auto", "cpu", "cuda"))
#: dtype of a model as loaded or saved (auto: the command's rule, stated in each help)
MODEL_DTYPES = Choice(("auto", "float32", "bfloat16", "float16"))
#: a folder to create (-o)
FOLDER = PathSpec(file_okay=False)
#: a file path (never a folder)
FILE = PathSpec(dir_okay=False)


def data_spec_help(example: str) -> str:
    """The forms of a DATA spec, for a help text (``example``: a TOFU config such as ``forget10``)."""
    return (f"Hub dataset 'org/name:config' (e.g. locuslab/TOFU:{example}), 'tofu:CONFIG' (bundled TOFU copy) or a "
            "local .json/.jsonl/.parquet file")


def max_shard_size(what: str) -> Any:
    """``--max-shard-size`` (bytes, or with a unit) of a command that writes ``what``."""
    return option("--max-shard-size", default=MAX_SHARD_SIZE, show_default=True,
                  help=f"Largest {what} shard: bytes, or with a unit (500MB = 500*10^6 bytes, 2GiB = 2*2^30 bytes).")


def allow_pickle(what: str) -> Any:
    """``--allow-pickle``: accept a ``.bin`` ``what`` (refused by default)."""
    return option("--allow-pickle", is_flag=True, default=False,
                  help=f"Accept a .bin (pickle) {what}. Pickle can run code: only for trusted sources.")


def data_dir(help: str) -> Any:  # noqa: A002
    """``--data-dir``: an offline folder of data files."""
    return option("--data-dir", type=FOLDER, help=help)


@dataclass(frozen=True)
class OutputOptions(Options):
    """``-q/--quiet`` and ``-v/--verbose``, on every command."""

    quiet: bool = option("-q", "--quiet", is_flag=True, default=False,
                         help="No progress (bars or lines) and no status lines: only the final result lines, "
                              "warnings and errors.")
    verbose: bool = option("-v", "--verbose", is_flag=True, default=False,
                           help="Debug logging (devices, dtypes, shard plans, files, timings), transformers and "
                                "huggingface_hub at info level, and their own progress bars.")

    def check(self) -> None:
        if self.quiet and self.verbose:
            raise InputError("pass either -q/--quiet or -v/--verbose, not both")

    @property
    def progress(self) -> bool:
        """Whether progress is reported: a bar on a terminal, lines elsewhere (:mod:`perta_hub.runtime.progress`)."""
        return not self.quiet


OUTPUT = OutputOptions()


def p_option() -> Any:
    """``--p``: the exponent of the weight map's ``w`` combination (default: the map's own)."""
    return option("--p", type=float,
                  help="Exponent p in w = I_f^p / (I_f^p + lam I_r^p + eps) [default: the weight map's, 1].")


def lam_option() -> Any:
    """``--lam``: the retention weight of the ``w`` combination (default: the map's own)."""
    return option("--lam", type=float, help="Retention weight lam [default: the weight map's, 1].")


def eps_option() -> Any:
    """``--eps``: the stabiliser of the ``w`` combination, in importance units (default: the map's own)."""
    return option("--eps", type=float, help="Stabiliser eps, in importance units [default: the weight map's].")
