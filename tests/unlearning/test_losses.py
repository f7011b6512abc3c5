"""The unlearning losses against plain-torch references on a tiny Llama: values and gradients, and NPO -> GA."""

from __future__ import annotations

import math

import pytest
import torch

from perta_hub.unlearning import losses
from tests.conftest import tofu_rows


def _batch(tokenizer, rows):
    from perta_hub.data.encoding import collate, encode_qa

    return collate([encode_qa(tokenizer, r["question"], r["answer"]) for r in rows], tokenizer.pad_token_id)


@pytest.fixture
def setup(make_model, tokenizer):
    from transformers import AutoModelForCausalLM

    path = make_model("m", seed=1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(make_model("ref", seed=2), dtype=torch.float32).eval()
    forget = _batch(tokenizer, tofu_rows("forget01")[:3])
    retain = _batch(tokenizer, tofu_rows("retain_perturbed")[:4])
    return model, ref, forget, retain


def _logits(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _ref_seq_nll(logits, labels):
    """Plain reference: per sequence, the sum over answer positions t of -log softmax(logits[t-1])[label t]."""
    out = []
    for b in range(labels.shape[0]):
        total = torch.zeros(())
        for t in range(1, labels.shape[1]):
            if labels[b, t] != -100:
                total = total - torch.log_softmax(logits[b, t - 1].float(), dim=-1)[labels[b, t]]
        out.append(total)
    return torch.stack(out)


def _ref_mean_nll(logits, labels):
    count = int((labels[:, 1:] != -100).sum())
    return _ref_seq_nll(logits, labels).sum() / count


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()


def _check(model, ours_fn, ref_fn):
    ours = ours_fn()
    ref = ref_fn()
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5), (float(ours), float(ref))
    g_ours, g_ref = _grads(model, ours_fn()), _grads(model, ref_fn())
    error = float((g_ours - g_ref).norm() / g_ref.norm())  # float32 sums in another order
    assert error < 1e-5, error


def test_mean_nll_is_the_causal_lm_loss(setup):
    model, _, forget, _ = setup
    out = model(**forget)
    assert torch.allclose(losses.mean_nll(out.logits, forget["labels"]), out.loss, atol=1e-6)


def test_ga_equals_reference(setup):
    model, _, f, _ = setup
    _check(model, lambda: losses.ga_loss(_logits(model, f), f["labels"]),
           lambda: -_ref_mean_nll(_logits(model, f), f["labels"]))


def test_grad_diff_equals_reference(setup):
    model, _, f, r = setup
    _check(model,
           lambda: losses.grad_diff_loss(_logits(model, f), f["labels"], _logits(model, r), r["labels"],
                                         gamma=0.7, retain_weight=1.3),
           lambda: 0.7 * -_ref_mean_nll(_logits(model, f), f["labels"])
           + 1.3 * _ref_mean_nll(_logits(model, r), r["labels"]))


@pytest.mark.parametrize("with_retain", [False, True])
def test_npo_equals_reference(setup, with_retain):
    model, ref, f, r = setup
    beta = 0.1
    with torch.no_grad():
        ref_logits = _logits(ref, f)

    def reference():
        logp = -_ref_seq_nll(_logits(model, f), f["labels"])
        logp_ref = -_ref_seq_nll(ref_logits, f["labels"])
        per_seq = [-(2 / beta) * torch.log(torch.sigmoid(-beta * (a - b)))
                   for a, b in zip(logp, logp_ref, strict=True)]
        loss = 2.0 * torch.stack(per_seq).mean()
        if with_retain:
            loss = loss + 0.5 * _ref_mean_nll(_logits(model, r), r["labels"])
        return loss

    _check(model,
           lambda: losses.npo_loss(_logits(model, f), f["labels"], ref_logits, beta=beta, gamma=2.0,
                                   retain_logits=_logits(model, r) if with_retain else None,
                                   retain_labels=r["labels"] if with_retain else None, retain_weight=0.5),
           reference)


def test_npo_at_the_reference_is_4_log2_over_beta_and_small_beta_gives_ga_direction(setup):
    model, _, f, _ = setup
    with torch.no_grad():
        same = _logits(model, f)
    at_ref = losses.npo_loss(_logits(model, f), f["labels"], same, beta=0.1)
    assert math.isclose(float(at_ref), 2 / 0.1 * math.log(2), rel_tol=1e-5)
    # a reference that differs from the model, so that the NPO weights are not trivially equal
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ga = _grads(model, losses.ga_loss(_logits(model, f), f["labels"]))
    npo = _grads(model, losses.npo_loss(_logits(model, f), f["labels"], same, beta=1e-5))
    cosine = float(torch.nn.functional.cosine_similarity(ga, npo, dim=0))
    assert cosine > 0.9999, cosine
    # the scale: NPO (beta -> 0) is GA on the per-sequence sum = GA's mean-per-token times tokens / sequences
    tokens, seqs = int((f["labels"][:, 1:] != -100).sum()), f["labels"].shape[0]
    scaled = ga * tokens / seqs
    assert float((npo - scaled).norm() / scaled.norm()) < 1e-3
    # with a larger beta the direction differs (sequences are re-weighted)
    npo_big = _grads(model, losses.npo_loss(_logits(model, f), f["labels"], same, beta=5.0))
    assert float(torch.nn.functional.cosine_similarity(ga, npo_big, dim=0)) < cosine
