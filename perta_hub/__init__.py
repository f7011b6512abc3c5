"""perta-hub: per-parameter task arithmetic (PerTA) unlearning, integrated with the Hugging Face Hub.

The Python API that the ``perta-hub`` command wraps::

    import perta_hub

    tv = perta_hub.task_vector("org/llama-tofu", "./llama-tofu-ft", "./tv")
    wm = perta_hub.compute_weights("org/llama-tofu", "locuslab/TOFU:forget10", "locuslab/TOFU:retain90",
                                   "./wm-grad", method="grad").out_dir
    outs = perta_hub.apply("org/llama-tofu", tv, weights=wm, alphas=[1.0], out_dir="./unlearned")
    perta_hub.run_evaluation([str(o) for o in outs], forget_split="forget10", retain_model="org/llama-tofu-retain90")
    perta_hub.push_folder(outs[0], "me/llama-tofu-perta", private=True, commit_message="PerTA alpha 1")

The names below are loaded on first use (PEP 562), so ``import perta_hub`` and the command line's start-up
stay cheap, and the merger runs where only torch and safetensors are installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from perta_hub._version import __version__

#: public name -> the module that defines it
_EXPORTS = {
    "CheckpointError": "perta_hub.errors",
    "DataError": "perta_hub.errors",
    "HubError": "perta_hub.errors",
    "InputError": "perta_hub.errors",
    "MismatchError": "perta_hub.errors",
    "NonFiniteError": "perta_hub.errors",
    "OutputError": "perta_hub.errors",
    "PertaError": "perta_hub.errors",
    "TrainingOptions": "perta_hub.options.training",
    "apply": "perta_hub.merge.apply",
    "bootstrap_intervals": "perta_hub.evaluation.bootstrap",
    "collate": "perta_hub.data.encoding",
    "combine_weights": "perta_hub.merge.math",
    "compare_files": "perta_hub.evaluation.bootstrap",
    "compare_results": "perta_hub.evaluation.bootstrap",
    "compute_weights": "perta_hub.importance.weight_map",
    "download": "perta_hub.io.hub_source",
    "encode_dataset": "perta_hub.data.encoding",
    "encode_qa": "perta_hub.data.encoding",
    "evaluate_tofu": "perta_hub.evaluation",
    "finetune": "perta_hub.training.finetune",
    "load_artifact": "perta_hub.io.artifacts",
    "load_qa": "perta_hub.data.loading",
    "open_checkpoint": "perta_hub.io.reader",
    "publish": "perta_hub.hub.publish",
    "push_folder": "perta_hub.hub.publish",
    "run_evaluation": "perta_hub.evaluation",
    "save_artifact": "perta_hub.jobs.artifact",
    "task_vector": "perta_hub.merge.task_vector",
    "task_vector_from_data": "perta_hub.training.from_data",
    "tune": "perta_hub.tuning.command",
    "unlearn": "perta_hub.unlearning.command",
    "UnlearnTrainingOptions": "perta_hub.options.training",
    "verify": "perta_hub.verification.api",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'perta_hub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
