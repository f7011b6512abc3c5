"""perta-hub: per-parameter task arithmetic (PerTA) unlearning, integrated with the Hugging Face Hub.

The Python API that the ``perta-hub`` command wraps. Heavy imports (torch,
transformers, datasets) happen inside the functions, so ``import perta_hub`` is cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

from perta_hub.errors import (  # noqa: E402
    CheckpointError,
    DataError,
    HubError,
    InputError,
    MismatchError,
    NonFiniteError,
    OutputError,
    PertaError,
)

__all__ = [
    "__version__",
    "CheckpointError",
    "DataError",
    "HubError",
    "InputError",
    "MismatchError",
    "NonFiniteError",
    "OutputError",
    "PertaError",
]
