"""The weight-map selectivity summary: w's mean, shares, histogram and ||w ⊙ tau|| / ||tau|| per group."""

from __future__ import annotations

import math

import pytest
import torch

from perta_hub.importance.summary import module_of, selectivity_markdown, summarise_weights


def test_module_and_layer_of_a_tensor_name():
    assert module_of("model.layers.3.mlp.up_proj.weight") == ("up_proj", "3")
    assert module_of("model.embed_tokens.weight") == ("embed_tokens", "-")
    assert module_of("model.layers.12.self_attn.q_proj.bias") == ("q_proj", "12")


def test_summary_equals_the_values_computed_by_hand():
    # w = f / (f + r) with eps tiny: q_proj -> [1, 0.5, 0, 0.75], layer 1's up_proj -> [0.2, 0.8]
    forget = {"model.layers.0.self_attn.q_proj.weight": torch.tensor([[1.0, 1.0], [0.0, 3.0]]),
              "model.layers.1.mlp.up_proj.weight": torch.tensor([1.0, 4.0], dtype=torch.bfloat16)}
    retain = {"model.layers.0.self_attn.q_proj.weight": torch.tensor([[0.0, 1.0], [2.0, 1.0]]),
              "model.layers.1.mlp.up_proj.weight": torch.tensor([4.0, 1.0], dtype=torch.bfloat16)}
    tau = {"model.layers.0.self_attn.q_proj.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
           "model.layers.1.mlp.up_proj.weight": torch.tensor([1.0, 1.0])}
    s = summarise_weights(list(forget), forget.__getitem__, retain.__getitem__, p=1.0, lam=1.0, eps=1e-30,
                          task_vector=tau.__getitem__)
    w = {"q": [1.0, 0.5, 0.0, 0.75], "up": [0.2, 0.8]}
    everything = w["q"] + w["up"]
    a = s["groups"]["all"]
    assert a["parameters"] == 6 and a["mean_w"] == pytest.approx(sum(everything) / 6, abs=1e-4)
    assert a["share_above_0.5"] == pytest.approx(3 / 6, abs=1e-4) and a["share_below_0.1"] == pytest.approx(1 / 6, abs=1e-4)
    assert sum(a["histogram"]) == 6 and a["histogram"][0] == 1 and a["histogram"][2] == 1 and a["histogram"][9] == 1
    q = s["groups"]["module:q_proj"]
    t = [1.0, 2.0, 3.0, 4.0]
    assert q["norm_w_tau_over_norm_tau"] == pytest.approx(
        math.sqrt(sum((wi * ti) ** 2 for wi, ti in zip(w["q"], t, strict=True)) / sum(ti * ti for ti in t)), abs=1e-4)
    assert s["groups"]["layer:1"]["mean_w"] == pytest.approx(0.5, abs=1e-3)
    assert list(s["groups"])[:1] == ["all"] and list(s["groups"])[-2:] == ["layer:0", "layer:1"]
    table = selectivity_markdown(s)
    assert "| all (‖w⊙τ‖/‖τ‖" in table and "p = 1, lam = 1" in table


def test_a_larger_p_spreads_w_towards_0_and_1():
    gen = torch.Generator().manual_seed(0)
    f, r = torch.rand(10_000, generator=gen) + 0.5, torch.rand(10_000, generator=gen) + 0.5
    names = ["model.layers.0.mlp.down_proj.weight"]
    spread = {p: summarise_weights(names, lambda _: f, lambda _: r, p=p, lam=1.0, eps=1e-12)["groups"]["all"]
              for p in (1.0, 4.0)}
    assert spread[4.0]["share_below_0.1"] > spread[1.0]["share_below_0.1"]
    assert spread[4.0]["share_above_0.5"] == pytest.approx(spread[1.0]["share_above_0.5"], abs=0.01)


def test_an_empty_map_is_refused():
    with pytest.raises(ValueError, match="no tensors"):
        summarise_weights([], dict().__getitem__, dict().__getitem__, p=1.0, lam=1.0, eps=1e-12)
