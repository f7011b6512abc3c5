"""The target model in memory, set in place to ``theta - alpha * (w ⊙ tau)`` for one alpha after another.

The inputs are opened and checked by :class:`perta_hub.merge.apply.PerTAMergeJob` (the same checks and
messages as ``apply``), and each tensor is computed from the **untouched original** on disk (never by
accumulating updates) with apply's own kernel (:func:`perta_hub.merge.kernel.merge_tensor`: chunked on CPU,
whole-tensor on CUDA, the rule for tensors outside a ``--params`` weight map, the non-finite diagnosis), cast to
the target's dtype. So after :meth:`InPlaceMerge.set_alpha` every parameter equals, bit for bit, the tensor
``apply`` writes for that alpha. Tied embeddings: ``lm_head`` shares ``embed_tokens``' storage, so setting the
stored tensor sets both.

Memory: the model (its dtype) plus one tensor's inputs at a time; the original, the task vector and the weight
map are mapped from disk tensor by tensor (the page cache holds them) or, on CUDA with room to spare, kept on
the device after the first alpha.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perta_hub.errors import InputError, MismatchError
from perta_hub.merge.apply import PerTAMergeJob, open_merge
from perta_hub.merge.spec import MergeSpec


def open_job(spec: MergeSpec, out_dir: str | Path) -> PerTAMergeJob:
    """Open and check the inputs of ``spec`` exactly as ``apply`` does, the weight map's zero weights included
    (nothing is written; its alphas are not used: :meth:`InPlaceMerge.set_alpha` gives one at a time)."""
    return open_merge(spec, out_dir)


def target_dtype(job: PerTAMergeJob) -> Any:
    """The one floating dtype of the target's tensors (the dtype ``apply`` writes and the model is loaded in)."""
    dtypes = {job.target.dtype(n) for n in job.target.names}
    if len(dtypes) != 1:
        raise InputError(f"tune loads the target in one dtype, but {job.model} mixes {sorted(map(str, dtypes))}; "
                         "use apply and evaluate instead")
    return dtypes.pop()


def load_target(job: PerTAMergeJob) -> Any:
    """The target as a transformers causal LM in eval mode, in its stored dtype, on the job's device."""
    from perta_hub.runtime.models import load_causal_lm

    return load_causal_lm(job.target.root, str(job.model), target_dtype(job), job.device, eval_mode=True)


class InPlaceMerge:
    """Sets ``model``'s parameters to the merge of one alpha at a time (see the module docstring).

    Args:
        job: the opened inputs (:func:`open_job`); this object does not close it.
        model: the target loaded with :func:`load_target` (or any module holding the target's tensors by name).
        cache_on_device: keep the inputs on a CUDA device after the first alpha (None: when it has room).
    """

    def __init__(self, job: PerTAMergeJob, model: Any, *, cache_on_device: bool | None = None) -> None:
        self.job, self.model = job, model
        state = model.state_dict(keep_vars=True)
        self.params: dict[str, Any] = {}
        for name in job.target.names:
            if name not in state:
                raise MismatchError(f"tensor {name} of {job.model} is not a parameter of the loaded model; "
                                    "use apply and evaluate instead")
            param = state[name]
            if tuple(param.shape) != tuple(job.target.shape(name)) or param.dtype != job.target.dtype(name):
                raise MismatchError(f"tensor {name}: the loaded model holds {param.dtype} {tuple(param.shape)}, the "
                                    f"checkpoint {job.target.dtype(name)} {tuple(job.target.shape(name))}")
            self.params[name] = param
        self.cuda = job.transfer.cuda
        if cache_on_device is None:
            cache_on_device = self.cuda and _room_for(job)
        self.cache: dict[str, Any] | None = {} if cache_on_device else None
        self.alpha: float | None = None

    def _inputs(self, name: str) -> list[Any]:
        if self.cache is not None and name in self.cache:
            return self.cache[name]
        tensors, event = self.job.load(name)
        self.job.transfer.wait(event)
        if self.cache is not None:
            self.cache[name] = tensors
        return tensors

    def set_alpha(self, alpha: float) -> None:
        """Set every parameter to apply's result for ``alpha`` (alpha 0 restores the target exactly)."""
        import torch

        with torch.no_grad():
            for name, param in self.params.items():
                (result,) = self.job.merge(name, self._inputs(name), [float(alpha)]).checked()
                param.copy_(result)
                if not self.cuda:
                    self.job.pool.give(result)  # the next tensor of that size reuses the buffer
        self.alpha = float(alpha)


def _room_for(job: PerTAMergeJob) -> bool:
    """Whether the CUDA device has room for the target's original, the task vector and the weight map (+10%)."""
    import torch

    need = job.target.total_bytes + sum(c.total_bytes for c in job.inputs)
    free, _ = torch.cuda.mem_get_info(torch.device(job.device))
    return free > 1.1 * need
