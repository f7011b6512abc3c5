"""The `perta-hub` command line: a thin click layer over the Python API, one module per command.

:mod:`perta_hub.cli.main` holds the group (error handling, the recorded command line, ``-q``/``-v``);
each command's options are generated from its options dataclass in :mod:`perta_hub.options`.
"""

from perta_hub.cli import (  # noqa: F401
    apply,
    compare,
    compute_weights,
    demo,
    evaluate,
    finetune,
    push,
    run,
    task_vector,
    tune,
    unlearn,
    verify,
)
from perta_hub.cli.main import main

__all__ = ["main"]
