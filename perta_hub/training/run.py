"""A Trainer run that writes a model folder, as ``finetune`` and ``unlearn`` both do it.

:func:`plan_steps`: the Trainer's batch arithmetic.
"""

from __future__ import annotations

import math

from perta_hub.options.training import EFFECTIVE_BATCH, TrainingOptions


def plan_steps(num_examples: int, options: TrainingOptions, num_processes: int) -> dict[str, int]:
    """Batch arithmetic, as the Trainer does it.

    Returns:
        ``grad_accum``, ``effective_batch`` (= batch_size * grad_accum * processes), ``steps_per_epoch``
        (optimizer steps: ceil(ceil(n / (batch_size * processes)) / grad_accum)), ``total_steps``
        (``max_steps``, or ceil(epochs * steps_per_epoch)) and ``warmup_steps`` (round(warmup *
        steps_per_epoch), at most total_steps).
    """
    per_step = options.batch_size * num_processes
    grad_accum = options.grad_accum or max(1, math.ceil(EFFECTIVE_BATCH / per_step))
    batches = math.ceil(num_examples / per_step)
    steps_per_epoch = max(1, math.ceil(batches / grad_accum))
    total = options.max_steps or math.ceil(options.epochs * steps_per_epoch)
    warmup = min(total, round(options.warmup * steps_per_epoch))
    return {"grad_accum": grad_accum, "effective_batch": per_step * grad_accum, "steps_per_epoch": steps_per_epoch,
            "total_steps": total, "warmup_steps": warmup}
