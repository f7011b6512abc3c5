"""The importance methods, by name: what ``compute-weights --method`` offers, the demo runs and the docs list.

A method says how one gradient ``g`` of the selected parameters enters the fp32 accumulator, what is done to
the accumulated mean at the end, whether each example's gradient must be taken alone, and in which units its
importances are (gradients to the power ``power``: the default ``eps`` of the weight map is
:data:`perta_hub.merge.math.DEFAULT_EPS` to that power, the same gradient magnitude whatever the method).
:func:`perta_hub.importance.gradients.accumulate_importance` runs any of them; adding a method is one
:class:`ImportanceMethod` below and its name in :data:`METHODS` (``tests/importance`` checks that
``docs/compute-weights.md`` lists it, from :func:`markdown_table`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perta_hub.errors import InputError
from perta_hub.merge.math import DEFAULT_EPS
from perta_hub.options.base import Choice


@dataclass(frozen=True)
class ImportanceMethod:
    """One way of turning per-parameter gradients into importances ``I >= 0``.

    Attributes:
        name: the ``--method`` value (and the weight map's recorded ``method``).
        help: what ``I`` is, for ``--help``.
        formula: ``I`` in the docs' notation, with a short explanation.
        paper_name: the method's name in the paper (the demo labels its maps ``perta-<name>``).
        per_example: each example's gradient is taken alone (micro-batch of one, its padding removed), as
            a method that is not linear in the gradient needs; otherwise whole micro-batches are run and
            their summed gradients accumulated (and under FSDP the processes share the examples).
        fold: adds one gradient ``g`` (fp32, the accumulator's shape) into the accumulator ``acc`` in place.
        finish: applied in place to the accumulated mean, once every process's sum is in (or None).
        power: importances are gradients to this power (their units).
    """

    name: str
    help: str
    formula: str
    paper_name: str
    per_example: bool
    fold: Callable[[Any, Any], Any]
    finish: Callable[[Any], Any] | None
    power: int

    @property
    def eps(self) -> float:
        """The weight map's default ``eps`` in this method's units (recorded in ``perta_config.json``)."""
        return DEFAULT_EPS ** self.power


GRAD = ImportanceMethod(
    name="grad", help="I = |mean over examples of the gradient|",
    formula="`I = | (1/N) sum_i g_i |` (absolute value of the mean gradient)", paper_name="PerTA-grad",
    per_example=False, fold=lambda acc, g: acc.add_(g), finish=lambda mean: mean.abs_(), power=1)

FISHER = ImportanceMethod(
    name="fisher", help="I = mean over examples of the per-example gradient squared",
    formula="`I = (1/N) sum_i g_i ** 2` (diagonal empirical Fisher: per-example gradients, **not** the square of "
            "a batch gradient)", paper_name="PerTA-fisher",
    per_example=True, fold=lambda acc, g: acc.addcmul_(g, g), finish=None, power=2)

#: every importance method, by name, in ``--help`` order
METHODS: dict[str, ImportanceMethod] = {m.name: m for m in (GRAD, FISHER)}


#: ``--method``'s choices
CHOICE = Choice(tuple(METHODS))


def method_named(name: str) -> ImportanceMethod:
    """The method called ``name``; another name is refused in one line (as ``--method`` refuses it)."""
    problem = Choice(tuple(METHODS)).problem(name)
    if problem:
        raise InputError(f"method: {problem}")
    return METHODS[name]


def markdown_table() -> str:
    """The table of methods in ``docs/compute-weights.md``."""
    rows = [f"| `{m.name}` | {m.formula} | {m.paper_name} |" for m in METHODS.values()]
    return "\n".join(["| method | importance | name in the paper |", "| --- | --- | --- |", *rows])
