"""Run by ``torchrun`` from tests/test_importance.py: the importance engine on an FSDP2-sharded tiny Llama.

Usage: torchrun --nproc_per_node 2 tests/fsdp_importance_worker.py MODEL_DIR BATCHES.pt OUT.pt
BATCHES.pt holds a list of collated batches. grad: each process takes its own (uneven) share of the
batches; fisher: every process takes every batch (see accumulate_importance). Rank 0 saves
{method: {"importance", "num_examples", "num_answer_tokens"}}.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM

from perta_hub.importance.gradients import accumulate_importance


def main() -> None:
    model_dir, examples, out = sys.argv[1:4]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    batches = torch.load(examples)
    results = {}
    for method in ("grad", "fisher"):
        mine = batches if method == "fisher" else batches[rank::world]
        result = accumulate_importance(model, mine, method=method, device="cpu", progress=False, fsdp=True)
        results[method] = {"importance": result.importance, "num_examples": result.num_examples,
                           "num_answer_tokens": result.num_answer_tokens}
        assert (rank == 0) == bool(result.importance)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
