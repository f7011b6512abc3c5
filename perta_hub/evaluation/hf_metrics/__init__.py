"""TOFU metrics as Hugging Face ``evaluate`` modules, loadable offline from the installed package.

Each file here is one ``evaluate.Metric`` that wraps :mod:`perta_hub.evaluation.metrics`, so
``evaluate.load(<path of the file>)`` gives the same numbers as ``perta-hub evaluate``:

* ``tofu_rouge``: ROUGE-L recall (stemming on), TOFU's ``*_Q_A_ROUGE``.
* ``tofu_truth_ratio``: per-question truth ratio and its forget or retain aggregate.
* ``tofu_forget_quality``: the KS-test p-value of forget quality.

This module imports nothing heavy; ``evaluate`` is imported only by :func:`load_metric`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perta_hub.errors import InputError

METRICS = ("tofu_rouge", "tofu_truth_ratio", "tofu_forget_quality")
_ALIASES = {name.removeprefix("tofu_"): name for name in METRICS}


def metric_path(name: str) -> Path:
    """Path of the metric module file for ``name`` (``tofu_rouge`` or ``rouge``, ...), for ``evaluate.load``."""
    full = _ALIASES.get(name, name)
    if full not in METRICS:
        raise InputError(f"unknown TOFU metric {name!r}; use one of {', '.join(METRICS)}")
    return Path(__file__).resolve().with_name(f"{full}.py")


def load_metric(name: str, **kwargs: Any) -> Any:
    """``evaluate.load(metric_path(name), **kwargs)``: works offline (no Hub access needed)."""
    path = metric_path(name)
    try:
        import evaluate
    except ImportError as err:
        raise InputError(f"the TOFU metric {name!r} needs the evaluate library: pip install evaluate") from err
    return evaluate.load(str(path), **kwargs)


CITATION = "Maini et al., TOFU: A Task of Fictitious Unlearning for LLMs, 2024."


def metric_info(description: str, inputs: str, features: dict[str, Any]) -> Any:
    """The ``evaluate.MetricInfo`` of a TOFU metric module (``features``: column name -> ``datasets`` feature)."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(description=description, citation=CITATION, inputs_description=inputs,
                               features=datasets.Features(features))


__all__ = ["METRICS", "load_metric", "metric_info", "metric_path"]
