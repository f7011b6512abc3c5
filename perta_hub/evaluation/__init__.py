"""Benchmark evaluation of (unlearned) models: TOFU metrics faithful to open-unlearning.

Modules: ``metrics`` (pure functions on numbers), ``privacy`` (the membership-inference attacks, AUC and
PrivLeak, on numbers), ``scoring`` (teacher-forced NLL, greedy generation), ``tofu`` (the runner and its JSON),
``reference`` (the retain model's per-row values, reused), ``bootstrap`` (intervals and the paired comparison),
``metric_info`` (what each reported number is), ``outputs`` (the files it writes), ``report`` (table,
model-card entries), ``seeds`` (the spread over seeds, PerTA against the baselines), ``plot`` (the sweep PNG),
``hf_metrics`` (the metrics as Hugging Face ``evaluate`` modules: :func:`load_metric`). Importing this package
loads no heavy library.
"""

from __future__ import annotations

from typing import Any

from perta_hub.evaluation.hf_metrics import METRICS, load_metric, metric_path


def evaluate_tofu(model: Any, **kwargs: Any) -> dict[str, Any]:
    """Evaluate one model on TOFU; see :func:`perta_hub.evaluation.tofu.evaluate_tofu`."""
    from perta_hub.evaluation.tofu import evaluate_tofu as _run

    return _run(model, **kwargs)


def run_evaluation(models: Any, **kwargs: Any) -> dict[str, Any]:
    """What ``perta-hub evaluate`` does; see :func:`perta_hub.evaluation.tofu.run_evaluation`."""
    from perta_hub.evaluation.tofu import run_evaluation as _run

    return _run(models, **kwargs)


__all__ = ["METRICS", "evaluate_tofu", "load_metric", "metric_path", "run_evaluation"]
