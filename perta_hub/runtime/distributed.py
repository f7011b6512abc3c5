"""Distributed runs: what ``accelerate launch`` set in the environment, and the collectives the importance pass uses.

Environment (read only here): ``ACCELERATE_USE_CPU``, ``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED`` and the
DeepSpeed ZeRO settings accelerate exports, plus the launcher variables (``MASTER_PORT``, ``WORLD_SIZE``, MPI's
``PMI_SIZE`` / ``OMPI_COMM_WORLD_SIZE``). Collectives: sums over processes, the lockstep padding FSDP needs, and
FSDP2 (DTensor) shards. torch is imported inside the functions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perta_hub.errors import InputError

if TYPE_CHECKING:
    import torch

#: the strings accelerate's ``str_to_bool`` reads as true
_TRUE = ("1", "true", "t", "yes", "y", "on")

SINGLE_CPU_PROCESS_NOTE = (
    "`accelerate launch --cpu` started ONE process (accelerate starts several CPU processes only through MPI, "
    "--mpirun_hostfile); {consequence}. For N CPU processes without MPI: "
    "CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes N"
)


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` holds a true value (``1``, ``true``, ``yes``...), as accelerate reads it."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def fsdp_launch() -> bool:
    """True under ``accelerate launch`` with an FSDP config (PartialState alone does not record it)."""
    return env_flag("ACCELERATE_USE_FSDP")


def single_process_cpu_launch(state: Any) -> bool:
    """True when ``accelerate launch --cpu --num_processes N>1`` ran us as a single process (no MPI).

    ``state`` is accelerate's ``PartialState``.
    """
    return (state.num_processes == 1 and env_flag("ACCELERATE_USE_CPU")
            and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ
            and "PMI_SIZE" not in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ)


def deepspeed_zero_settings() -> tuple[Any, Any] | None:
    """(ZeRO stage, whether 16-bit weights are gathered on save) under ``accelerate launch`` with DeepSpeed, else None.

    From the DeepSpeed JSON named by ``ACCELERATE_DEEPSPEED_CONFIG_FILE`` (``zero_optimization.stage`` and
    ``stage3_gather_16bit_weights_on_model_save``, as written there), else from accelerate's own variables
    (``ACCELERATE_DEEPSPEED_ZERO_STAGE``, ``ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL`` as a bool). A JSON file
    that cannot be parsed gives None (DeepSpeed itself reports it).
    """
    if not env_flag("ACCELERATE_USE_DEEPSPEED"):
        return None
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
    if config_file and config_file.lower() != "none" and Path(config_file).is_file():
        try:
            zero = json.loads(Path(config_file).read_text()).get("zero_optimization", {})
        except ValueError:
            return None
        return zero.get("stage"), zero.get("stage3_gather_16bit_weights_on_model_save")
    return (os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"),
            env_flag("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"))


# ------------------------------------------------------------------------------------------ collectives


def world_and_rank() -> tuple[int, int]:
    """(world size, rank) of the default process group, (1, 0) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def reduce_sum(t: torch.Tensor, everyone: bool) -> None:
    """In-place sum over processes, onto every process or onto rank 0 only (NCCL: through the GPU)."""
    import torch
    import torch.distributed as dist

    work = t
    if t.device.type == "cpu" and dist.get_backend() == "nccl":
        work = t.to(torch.device("cuda", torch.cuda.current_device()))
    if everyone:
        dist.all_reduce(work)
    else:
        dist.reduce(work, dst=0)
    if work is not t:
        t.copy_(work)


def lockstep_padding(num_batches: int, device: torch.device) -> int:
    """Steps this process must add so that every process runs as many steps (FSDP collectives)."""
    import torch
    import torch.distributed as dist

    steps = torch.tensor([num_batches], device=device)
    dist.all_reduce(steps, op=dist.ReduceOp.MAX)  # FSDP runs on GPUs: device is the process's GPU
    missing = int(steps.item()) - num_batches
    if missing and num_batches == 0:
        raise InputError("fewer examples than processes under FSDP; run with fewer processes")
    return missing


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def gather_full(param: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """The full tensor of a DTensor parameter's local accumulator (FSDP2); ``local`` itself otherwise."""
    if not hasattr(param, "device_mesh"):
        return local
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(local, param.device_mesh, param.placements, shape=param.shape,
                              stride=param.stride()).full_tensor()
