"""``task-vector --base A --finetuned B --dry-run``: both checkpoints checked from their headers, the plan printed.

Hub inputs are opened from their safetensors headers (:mod:`perta_hub.hub.remote_headers`) into a temporary
folder, so every check of :class:`~perta_hub.merge.task_vector.TaskVectorJob` (architecture, names, shapes,
float dtypes) runs having downloaded only headers and small JSON files; then the plan of the run is printed
(:func:`perta_hub.hub.stream_plan.describe`, local mode: the inputs are downloaded in full, the artifact
written, then pushed with ``--push``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from perta_hub.hub.remote_headers import is_remote, open_remote_model
from perta_hub.hub.stream_plan import describe, plan_merge
from perta_hub.merge.task_vector import TaskVectorJob


class RemoteTaskVectorJob(TaskVectorJob):
    """A :class:`TaskVectorJob` whose Hub checkpoints are opened from their headers into ``staging``."""

    def __init__(self, *args: Any, staging: Path, **kwargs: Any) -> None:
        self.staging = staging
        super().__init__(*args, **kwargs)

    def open_model(self, model: str | Path, allow_pickle: bool, out_dir: str | Path) -> Any:
        if is_remote(model):
            return open_remote_model(str(model), self.staging / str(model).replace("/", "--"))
        return super().open_model(model, allow_pickle, out_dir)


def dry_run(o: Any, push: str | None, console: Any) -> None:
    """Check ``o.base`` and ``o.finetuned`` (task-vector options) from headers and print the plan; write nothing."""
    staging = Path(tempfile.mkdtemp(prefix="perta-headers-"))
    try:
        job = RemoteTaskVectorJob(o.base, o.finetuned, o.out_dir, dtype=o.dtype, max_shard_size=o.max_shard_size,
                                  allow_pickle=o.allow_pickle, extra_provenance=None, staging=staging)
        try:
            plan = plan_merge(job, o.max_shard_size)
            held = max((job.held_bytes(n) for n in job.anchor.names), default=0)
            for line in describe(plan, mode="local", push=push, tensors=len(job.anchor.names), held=held):
                console.result(line)
        finally:
            job.close()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
