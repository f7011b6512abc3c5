"""Choosing alpha (``perta-hub tune``): an in-memory search for the strongest forgetting within a utility budget.

Modules: ``search`` (the bracketing search, pure), ``signals`` (forget/retain NLL and probability, ROUGE),
``in_place`` (the target set in place to apply's result for one alpha), ``report`` (record, table, plot),
``command`` (:func:`tune`, what the command runs). ``perta_hub.tune(...)`` calls :func:`tune`.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def tune(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Choose alpha and write the chosen model; see :func:`perta_hub.tune.command.tune`."""
    from perta_hub.tune.command import tune as _tune

    return _tune(*args, **kwargs)


class _CallableModule(types.ModuleType):
    """``perta_hub.tune`` is this package once a submodule is imported; calling it calls :func:`tune`."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__all__ = ["tune"]
