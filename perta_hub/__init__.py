"""perta-hub: per-parameter task arithmetic (PerTA) unlearning, integrated with the Hugging Face Hub.

The Python API that the ``perta-hub`` command wraps::

    import perta_hub

    tv = perta_hub.task_vector("org/llama-tofu", "./llama-tofu-ft", "./tv")
    wm = perta_hub.compute_weights("org/llama-tofu", "locuslab/TOFU:forget10", "locuslab/TOFU:retain90",
                                   "./wm-grad", method="grad").out_dir
    outs = perta_hub.apply("org/llama-tofu", tv, weights=wm, alphas=[1.0], out_dir="./unlearned")
    perta_hub.run_evaluation([str(o) for o in outs], forget_split="forget10", retain_model="org/llama-tofu-retain90")
    perta_hub.push_folder(outs[0], "me/llama-tofu-perta", private=True, commit_message="PerTA alpha 1")

Every module imports torch, transformers and datasets inside its functions, so importing the package is
cheap and the merger runs where only torch and safetensors are installed.
"""

from __future__ import annotations

from perta_hub._version import __version__
from perta_hub.data.encoding import collate, encode_dataset, encode_qa  # noqa: E402
from perta_hub.data.loading import load_qa  # noqa: E402
from perta_hub.errors import (  # noqa: E402
    CheckpointError,
    DataError,
    HubError,
    InputError,
    MismatchError,
    NonFiniteError,
    OutputError,
    PertaError,
)
from perta_hub.evaluation import evaluate_tofu, run_evaluation  # noqa: E402
from perta_hub.hub.publish import publish, push_folder  # noqa: E402
from perta_hub.importance.weight_map import compute_weights  # noqa: E402
from perta_hub.io.artifacts import load_artifact  # noqa: E402
from perta_hub.io.hub_source import download  # noqa: E402
from perta_hub.io.reader import open_checkpoint  # noqa: E402
from perta_hub.jobs.artifact import save_artifact  # noqa: E402
from perta_hub.merge.apply import apply  # noqa: E402
from perta_hub.merge.math import combine_weights  # noqa: E402
from perta_hub.merge.task_vector import task_vector  # noqa: E402
from perta_hub.training.finetune import finetune  # noqa: E402
from perta_hub.training.from_data import task_vector_from_data  # noqa: E402
from perta_hub.training.options import TrainingOptions  # noqa: E402

__all__ = [
    "__version__",
    "CheckpointError",
    "DataError",
    "HubError",
    "InputError",
    "MismatchError",
    "NonFiniteError",
    "OutputError",
    "PertaError",
    "TrainingOptions",
    "apply",
    "collate",
    "combine_weights",
    "compute_weights",
    "download",
    "encode_dataset",
    "encode_qa",
    "evaluate_tofu",
    "finetune",
    "load_artifact",
    "load_qa",
    "open_checkpoint",
    "publish",
    "push_folder",
    "run_evaluation",
    "save_artifact",
    "task_vector",
    "task_vector_from_data",
]
