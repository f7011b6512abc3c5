"""The gradient unlearning methods, by ``--method`` code: name, retain data, the weights their loss has.

``unlearn --method``'s choices and help, its checks (:class:`perta_hub.options.unlearn.UnlearnOptions`), the
record's hyper-parameters, the card's name and the demo's list all read this table; the losses themselves
are :mod:`perta_hub.unlearning.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UnlearnMethod:
    """One gradient unlearning method.

    Attributes:
        code: the ``--method`` value, recorded as ``method``.
        name: the reference framework's name (open-unlearning), recorded as ``method_name``.
        retain: ``needed``, ``optional`` or ``refused``: the method's use of retain data.
        weights: the options its loss has besides the retain weight (``gamma``, ``beta``).
        reference: the loss compares with a frozen copy of the target (the model before unlearning).
        note: what ``--method``'s help says about it.
    """

    code: str
    name: str
    retain: str
    weights: tuple[str, ...]
    reference: bool = False
    note: str = ""


#: ``ga`` GradAscent, ``gd`` GradDiff, ``npo`` Negative Preference Optimization, in ``--help`` order
UNLEARN_METHODS: dict[str, UnlearnMethod] = {m.code: m for m in (
    UnlearnMethod("ga", "GradAscent", retain="refused", weights=()),
    UnlearnMethod("gd", "GradDiff", retain="needed", weights=("gamma",), note="needs --retain"),
    UnlearnMethod("npo", "NPO", retain="optional", weights=("gamma", "beta"), reference=True,
                  note="frozen MODEL as reference; with --retain also the retain NLL"),
)}
#: the ``--method`` codes
METHODS = tuple(UNLEARN_METHODS)
#: code -> the reference framework's name
METHOD_NAMES = {m.code: m.name for m in UNLEARN_METHODS.values()}


def method_help() -> str:
    """``--method``'s help: each code, its name and note."""
    return ", ".join(f"{m.code} = {m.name}" + (f" ({m.note})" if m.note else "") for m in UNLEARN_METHODS.values()) + "."


def using(weight: str) -> tuple[str, ...]:
    """The codes of the methods whose loss has ``weight`` (``gamma``, ``beta``)."""
    return tuple(m.code for m in UNLEARN_METHODS.values() if weight in m.weights)
