"""The package's own exception types and the CLI's exit codes (the one definition; docs/index.md#exit-codes).

Every message says what is wrong and what to do; the CLI prints it as one line and exits with
:attr:`ExitCode.ERROR`, never a traceback.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit status of every ``perta-hub`` command."""

    #: the command did what it was asked (``verify``: every requested check passed)
    OK = 0
    #: an input that cannot be used (a value, path, repo id, data, checkpoint, option combination) or a run that
    #: failed (Hub, disk full, NaN): one ``Error:`` line. ``verify``: a check FAILED
    ERROR = 1
    #: the command line could not be parsed (click: unknown command or option, missing argument, a value of the
    #: wrong type, out of range or not one of the choices); nothing ran
    USAGE = 2
    #: ``verify``: no check failed, but a requested one could not be made (NOT VERIFIED: an input found nowhere, a
    #: missing token, weights made by training under ``--recompute``, a requested level with nothing to check)
    NOT_VERIFIED = 3
    #: interrupted (Ctrl-C, SIGINT: 128 + 2); re-running the same command resumes
    INTERRUPTED = 130


class PertaError(Exception):
    """Base class of every error perta-hub raises on purpose."""

    exit_code = ExitCode.ERROR


class InputError(PertaError):
    """A command-line value, a path or a repo id that cannot be used as given."""


class RecipeError(InputError):
    """A recipe (``perta-hub run``) that cannot be run as written; the message names the YAML path."""


class CheckpointError(PertaError):
    """A checkpoint or artifact that is missing, unreadable, corrupt or not safetensors."""


class MismatchError(PertaError):
    """Two inputs that do not fit together (names, shapes, dtypes, architectures)."""


class NonFiniteError(PertaError):
    """NaN or Inf found in a task vector or a weight map."""


class OutputError(PertaError):
    """An output location that would destroy something (an input, another model)."""


class DataError(PertaError):
    """A dataset that cannot be used: missing field, empty split, nothing left after truncation."""


class HubError(PertaError):
    """A Hub operation that failed: auth, missing repo or revision, network, server error."""
