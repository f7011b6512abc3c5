"""Gradient-based unlearning baselines (GradAscent, GradDiff, NPO) with the reference framework's definitions.

:mod:`perta_hub.unlearning.methods` names the methods and their rules, :mod:`perta_hub.unlearning.losses` holds
the pure losses, :mod:`perta_hub.unlearning.trainer` the
transformers ``Trainer`` that minimises them, :mod:`perta_hub.unlearning.command` the ``unlearn`` job
(output folder, record, card). See ``docs/unlearn.md``.
"""

from perta_hub.options.training import UnlearnTrainingOptions
from perta_hub.unlearning.methods import METHODS

__all__ = ["METHODS", "UnlearnTrainingOptions", "unlearn"]


def unlearn(*args, **kwargs):  # type: ignore[no-untyped-def]
    """:func:`perta_hub.unlearning.command.unlearn` (imported lazily: it imports transformers)."""
    from perta_hub.unlearning.command import unlearn as run

    return run(*args, **kwargs)
