"""The streaming merger and task vectors against plain-torch references on tiny Llama checkpoints."""

from __future__ import annotations

import time

import pytest
import torch

from perta_hub.io.artifacts import load_artifact
from perta_hub.merge.apply import apply
from perta_hub.merge.math import combine_weights
from perta_hub.merge.task_vector import task_vector
from tests.helpers import load_state, make_weight_map, tree_digest


@pytest.mark.parametrize(("dtype", "tied"), [("float32", False), ("bfloat16", True)])
def test_task_vector_and_apply_match_torch_reference(tmp_path, make_model, dtype, tied):
    base = make_model("base", seed=0, dtype=dtype, tie_word_embeddings=tied)
    tuned = make_model("tuned", seed=1, dtype=dtype, tie_word_embeddings=tied, max_shard_size="25KB")
    before = tree_digest(base), tree_digest(tuned)
    tv = task_vector(base, tuned, tmp_path / "tv", max_shard_size="30KB", progress=False)
    wm = make_weight_map(tmp_path / "wm", base)

    theta, ft = load_state(base), load_state(tuned)
    tau = load_state(tv, "task_vector")
    assert set(tau) == set(theta) and ("lm_head.weight" in theta) == (not tied)
    for name in theta:
        assert tau[name].dtype == torch.float32
        torch.testing.assert_close(tau[name], ft[name].float() - theta[name].float(), rtol=0, atol=0)

    outs = apply(base, tv, alphas=[0.5, 1.5], out_dir=tmp_path / "out", weights=wm, max_shard_size="45KB",
                 device="cpu", progress=False)
    assert [o.name for o in outs] == ["alpha-0.5", "alpha-1.5"]
    i_f, i_r = load_state(wm, "importance_forget"), load_state(wm, "importance_retain")
    for alpha, out in zip([0.5, 1.5], outs, strict=True):
        merged = load_state(out)
        assert set(merged) == set(theta)
        for name, t in theta.items():
            w = i_f[name] / (i_f[name] + i_r[name] + 1e-12)
            ref = (t.float() - alpha * (w * tau[name])).to(t.dtype)
            assert merged[name].dtype == t.dtype
            torch.testing.assert_close(merged[name], ref)  # fp32 rounding of the fused op
    assert (tree_digest(base), tree_digest(tuned)) == before


def test_output_is_a_loadable_checkpoint_that_generates(tmp_path, make_model, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    (out,) = apply(base, tv, alphas=[1.0], out_dir=tmp_path / "out", progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("Who wrote", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5
    reference = AutoModelForCausalLM.from_pretrained(base).state_dict()
    finetuned = AutoModelForCausalLM.from_pretrained(tuned).state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, 2 * reference[name] - finetuned[name], rtol=1e-6, atol=1e-6)
    card = (out / "README.md").read_text()
    assert "alpha = 1.0" in card and "library_name: transformers" in card
    config = load_artifact(tv).config
    assert config["kind"] == "task_vector" and config["base"]["revision"].startswith("sha256:")


def test_weight_map_restricted_to_some_parameters_uses_w_1_elsewhere(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    only = ["model.layers.0.mlp.down_proj.weight"]
    wm = make_weight_map(tmp_path / "wm", base, names=only)
    (out,) = apply(base, tv, alphas=[1.0], out_dir=tmp_path / "out", weights=wm, p=2.0, lam=0.5, eps=1e-6,
                   progress=False)
    theta, tau, merged = load_state(base), load_state(tv, "task_vector"), load_state(out)
    i_f, i_r = load_state(wm, "importance_forget"), load_state(wm, "importance_retain")
    for name in theta:
        w = combine_weights(i_f[name], i_r[name], 2.0, 0.5, 1e-6) if name in only else 1.0
        torch.testing.assert_close(merged[name], theta[name] - w * tau[name])


def test_combine_weights_formula():
    i_f, i_r = torch.tensor([4.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 3.0])
    w = combine_weights(i_f, i_r, p=2.0, lam=0.5, eps=0.0 + 1e-12)
    torch.testing.assert_close(w, torch.tensor([16 / 16.5, 0.0, 1 / 5.5]))


def test_rerun_of_a_complete_output_is_a_no_op(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    (out,) = apply(base, tv, alphas=[1.0], out_dir=tmp_path / "out", progress=False)

    def state() -> dict[str, tuple[str, int]]:  # bytes (sha256) and mtime (ns) of every file
        return {name: (digest, (out / name).stat().st_mtime_ns) for name, digest in tree_digest(out).items()}

    before = state()
    time.sleep(0.02)  # a rewrite would show as a newer mtime
    assert apply(base, tv, alphas=[1.0], out_dir=tmp_path / "out", progress=False) == [out]
    assert state() == before
