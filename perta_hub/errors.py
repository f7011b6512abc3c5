"""The package's own exception types.

Every message says what is wrong and what to do; the CLI prints it as one line
and exits with a non-zero status, never a traceback.
"""


class PertaError(Exception):
    """Base class of every error perta-hub raises on purpose."""

    exit_code = 1


class InputError(PertaError):
    """A command-line value, a path or a repo id that cannot be used as given."""

    exit_code = 2


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
