"""The model set in place equals apply's output bit for bit (every parameter, every alpha, TV and weight maps)."""

from __future__ import annotations

import pytest
import torch

from perta_hub.merge.apply import apply
from perta_hub.merge.task_vector import task_vector
from perta_hub.tuning.in_place import InPlaceMerge, load_target, open_job
from tests.helpers import load_state, make_weight_map

ALPHAS = [1.7, 0.35, 3.0]  # not in order: each alpha is computed from the original, never from the last one


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


@pytest.mark.parametrize(("dtype", "tied", "weights"), [
    ("float32", False, None),
    ("bfloat16", True, "all"),
    ("float32", True, "w=0"),
])
def test_in_place_equals_apply_bytes(tmp_path, make_model, dtype, tied, weights):
    base = make_model("base", dtype=dtype, tie_word_embeddings=tied)
    tuned = make_model("tuned", seed=1, dtype=dtype, tie_word_embeddings=tied)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    wm = None
    if weights == "all":
        wm = make_weight_map(tmp_path / "wm", base)
    elif weights == "w=0":  # a --params map: the other tensors stay the target's
        wm = make_weight_map(tmp_path / "wm", base, names=["model.layers.1.mlp.up_proj.weight"], params="up_proj",
                             unrestricted="w=0")
    outs = apply(base, tv, alphas=ALPHAS, out_dir=tmp_path / "out", weights=wm, device="cpu", progress=False)
    job = open_job(base, tv, weights=wm, p=None, lam=None, eps=None, device="cpu", out_dir=tmp_path / "unused",
                   max_shard_size="5GB", allow_pickle=False)
    try:
        model = load_target(job)
        merge = InPlaceMerge(job, model)
        state = model.state_dict()
        target = load_state(base)
        for alpha, out in zip(ALPHAS, outs, strict=True):
            merge.set_alpha(alpha)
            written = load_state(out)
            assert set(written) <= set(state)
            for name, tensor in written.items():
                assert same_bits(state[name], tensor), (alpha, name)
            if weights == "w=0":
                assert same_bits(state["model.norm.weight"], target["model.norm.weight"])
        if tied:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        merge.set_alpha(0.0)  # alpha 0 restores the target exactly
        assert all(same_bits(state[n], t) for n, t in target.items())
    finally:
        job.close()
    assert not (tmp_path / "unused").exists()
