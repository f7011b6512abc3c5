"""The one merge kernel: ``apply`` (a sweep), ``apply --stream``, ``tune``'s in-place merge and ``verify --recompute``
each give, bit for bit, what :func:`perta_hub.merge.kernel.merge_tensor` gives when called directly on the inputs
(read here with safetensors, not with perta-hub's reader): the reference of every path is the kernel itself, not
another path. Restricted weight maps (``w=0`` and ``w=1`` outside the map), a bf16 target, p/lam overrides and
alpha sweeps."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import torch

from perta_hub.merge.apply import apply
from perta_hub.merge.kernel import Merged, Weighting, merge_tensor
from perta_hub.merge.spec import MergeSpec
from perta_hub.merge.task_vector import task_vector
from tests.helpers import (
    RESTRICTED,
    assert_is_kernel,
    kernel_outputs,
    load_state,
    rewrite_tensors,
    same_bits,
    weight_map,
)

ALPHAS = [1.7, 0.35, 3.0]  # not in order; one apply call writes the sweep


@pytest.mark.parametrize(("kind", "overrides"), [
    (None, {}),
    ("all", {"p": 2.0, "lam": 0.5}),
    ("w=0", {}),
    ("w=1", {}),
])
def test_apply_tune_and_verify_give_the_kernels_bytes(tmp_path, make_model, kind, overrides):
    from perta_hub.tuning.in_place import InPlaceMerge, load_target, open_job
    from perta_hub.verification import verify

    target = make_model("target", dtype="bfloat16", tie_word_embeddings=True)
    tuned = make_model("tuned", seed=1, dtype="bfloat16", tie_word_embeddings=True)
    tv = task_vector(target, tuned, tmp_path / "tv", progress=False)
    wm = weight_map(kind, tmp_path, target)
    expected = kernel_outputs(target, tv, wm, ALPHAS, overrides)
    original = load_state(target)
    if kind == "w=0":  # outside the map: the target's own tensors
        assert all(same_bits(expected[a][n], original[n]) for a in ALPHAS for n in original if n not in RESTRICTED)
    if kind == "w=1":  # outside the map: plain task arithmetic
        plain = kernel_outputs(target, tv, None, ALPHAS)
        assert all(same_bits(expected[a][n], plain[a][n]) for a in ALPHAS for n in original if n not in RESTRICTED)
    assert not same_bits(expected[1.7][RESTRICTED[0]], original[RESTRICTED[0]])

    # apply: one sweep
    spec = MergeSpec(target, tv, weights=wm, alphas=tuple(ALPHAS), device="cpu", **overrides)
    outs = apply(target, tv, alphas=ALPHAS, out_dir=tmp_path / "out", weights=wm, device="cpu",
                 max_shard_size="30KB", progress=False, **overrides)
    for alpha, out in zip(ALPHAS, outs, strict=True):
        assert_is_kernel(load_state(out), expected[alpha], f"apply alpha {alpha}")

    # tune: the model set in place, alpha after alpha (the job is opened from the same spec)
    job = open_job(spec, tmp_path / "unused")
    try:
        model = load_target(job)
        merge = InPlaceMerge(job, model)
        state = model.state_dict()
        for alpha in ALPHAS:
            merge.set_alpha(alpha)
            assert_is_kernel({n: state[n] for n in original}, expected[alpha], f"tune alpha {alpha}")
    finally:
        job.close()

    # verify --recompute: passes on the kernel's bytes, and tells apart the kernel's result for another alpha
    result = verify(outs[0], recompute=True, privacy_level=False)
    tensors = next(c for c in result.checks if c.name == "tensors")
    assert tensors.status == "pass" and "bit for bit identical" in tensors.detail, result.checks
    swapped = RESTRICTED[0]
    rewrite_tensors(outs[0], "model", lambda s: {k: (expected[0.35][k] if k == swapped else v) for k, v in s.items()})
    result = verify(outs[0], recompute=True, privacy_level=False)
    tensors = next(c for c in result.checks if c.name == "tensors")
    assert tensors.status == "fail" and tensors.detail.startswith(f"{swapped} differs"), tensors


def test_the_rest_rule_and_the_paths():
    """Outside a restricted map: w=0 copies the target (the task vector is not even needed), w=1 and a map
    made before the key existed give plain task arithmetic; several alphas in one call equal one call each."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(300_000, generator=gen).to(torch.bfloat16)  # more than one chunk
    delta = torch.randn(300_000, generator=gen) * 1e-2
    i_f, i_r = torch.rand(300_000, generator=gen), torch.rand(300_000, generator=gen)
    alphas = [0.5, 2.0]
    kept = merge_tensor("t", theta, None, alphas, weighting=Weighting(1.0, 1.0, 1e-12, "w=0")).checked()
    assert all(same_bits(k, theta) and k.data_ptr() != theta.data_ptr() for k in kept)
    plain = merge_tensor("t", theta, delta, alphas).checked()
    for rule in ("w=1", None):
        rest = merge_tensor("t", theta, delta, alphas, weighting=Weighting(1.0, 1.0, 1e-12, rule)).checked()
        assert all(same_bits(a, b) for a, b in zip(rest, plain, strict=True))
    weighted = merge_tensor("t", theta, delta, alphas, weighting=Weighting(1.0, 1.0, 1e-12, "w=0"),
                            importances=(i_f, i_r)).checked()
    for alpha, result in zip(alphas, weighted, strict=True):
        (alone,) = merge_tensor("t", theta, delta, [alpha], weighting=Weighting(1.0, 1.0, 1e-12),
                                importances=(i_f, i_r)).checked()
        assert same_bits(result, alone)
        reference = (theta.float() - alpha * (delta * (i_f / (i_f + i_r + 1e-12)))).to(torch.bfloat16)
        torch.testing.assert_close(result, reference)


@pytest.mark.parametrize(("case", "message"), [
    ("theta", "tensor t of the model has NaN or Inf"),
    ("delta", "tensor t of the task vector has NaN or Inf"),
    ("forget", "tensor t of the weight map has NaN or Inf in importance_forget"),
    ("negative", "tensor t of the weight map has a negative importance in importance_retain (-1.0)"),
    ("alpha", "tensor t: the merge with alpha 10.0 gives NaN or Inf in torch.float16"),
])
def test_the_diagnosis_names_the_cause(case, message):
    from perta_hub.errors import CheckpointError, NonFiniteError

    theta, delta = torch.zeros(300_000, dtype=torch.float16), torch.zeros(300_000)
    i_f, i_r = torch.rand(300_000), torch.rand(300_000)
    alphas = [0.1]
    if case == "theta":
        theta[-1] = float("nan")
    elif case == "delta":
        delta[5] = float("inf")
    elif case == "forget":
        i_f[-1] = float("nan")
    elif case == "negative":
        i_r[7] = -1.0
    else:
        delta[-1], alphas = 1e5, [0.1, 10.0]
    merged = merge_tensor("t", theta, delta, alphas, weighting=Weighting(1.0, 1.0, 1e-12), importances=(i_f, i_r))
    assert isinstance(merged, Merged) and len(merged.tensors) == len(alphas)
    assert isinstance(merged.error, CheckpointError if case == "negative" else NonFiniteError)
    assert str(merged.error).startswith(message), merged.error
    with pytest.raises(type(merged.error)):
        merged.checked()


def test_only_the_kernel_runs_the_merge_math():
    """No caller keeps a copy of the CPU/CUDA choice, the rest rule or the diagnosis."""
    root = Path(__file__).resolve().parents[2] / "perta_hub"
    own = {root / "merge" / "math.py", root / "merge" / "kernel.py"}
    pattern = re.compile(r"\b(merge_chunked|merge_whole|diagnose|_non_finite)\(|rest_unchanged and")
    for path in sorted(root.rglob("*.py")):
        if path not in own:
            assert not pattern.search(path.read_text()), f"{path.relative_to(root)} runs the merge math itself"


def test_merge_spec_from_options_and_apply_signature(tmp_path):
    from perta_hub.errors import InputError
    from perta_hub.options.apply import ApplyOptions

    options = ApplyOptions(task_vector="tv", weights="wm", alphas=("0.5", "2"), out_dir=str(tmp_path), p=2.0,
                           device="cpu", max_shard_size="1GB")
    spec = MergeSpec.from_options("model", options)
    assert spec == MergeSpec("model", "tv", weights="wm", alphas=(0.5, 2.0), p=2.0, device="cpu",
                             max_shard_size="1GB")
    assert spec.replace(weights=None, alphas=(1.0,)).weights is None
    with pytest.raises(InputError, match="--alpha values repeat"):
        MergeSpec("model", "tv", alphas=(1, 1.0))
    steps = MergeSpec.from_options("model", dataclasses.replace(options, alphas=(), steps=("0.5",)))
    assert steps.steps == (0.5,) and steps.alphas == () and steps.folders(tmp_path) == []
    assert steps.at_steps(0.25).alphas == (2.0,) and steps.at_steps(0.25).folders(tmp_path) == [tmp_path]
    assert MergeSpec("model", "tv", alphas=(), steps=(1, 2)).at_steps(0.5).folders(tmp_path) == [
        tmp_path / "step-1.0", tmp_path / "step-2.0"]
    with pytest.raises(InputError, match="--alpha and --step exclude each other"):
        MergeSpec.from_options("model", dataclasses.replace(options, steps=("0.5",)))
    assert list(inspect.signature(apply).parameters) == [
        "model", "task_vector", "alphas", "out_dir", "steps", "weights", "p", "lam", "eps", "device",
        "max_shard_size", "allow_pickle", "allow_negative_alpha", "progress"]


def test_the_kernel_sums_the_step_norm():
    """Each merged tensor gives (||w*tau||^2, ||tau||^2): the chunked path exactly as step_sums (what --step reads),
    the whole-tensor (CUDA) path to fp32 rounding, a tensor outside a w=0 map only its ||tau||^2; StepNorm adds them
    up into ||alpha w*tau|| / ||tau||."""
    from perta_hub.merge.kernel import StepNorm
    from perta_hub.merge.math import merge_whole, step_sums

    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(600_000, generator=gen).to(torch.bfloat16)  # three chunks
    delta = torch.randn(600_000, generator=gen) * 1e-2
    i_f, i_r = torch.rand(600_000, generator=gen), torch.rand(600_000, generator=gen)
    w = i_f.double() / (i_f.double() + i_r.double() + 1e-12)
    exact = (float(((w * delta.double()) ** 2).sum()), float((delta.double() ** 2).sum()))
    weighting = Weighting(1.0, 1.0, 1e-12, "w=0")
    merged = merge_tensor("t", theta, delta, [0.5, 2.0], weighting=weighting, importances=(i_f, i_r))
    assert merged.norms == step_sums(delta, (i_f, i_r, 1.0, 1.0, 1e-12))
    assert merged.norms == pytest.approx(exact, rel=1e-5)
    assert merge_whole(theta, delta, [1.0], (i_f, i_r, 1.0, 1.0, 1e-12))[2] == pytest.approx(exact, rel=1e-5)
    for bf16 in (False, True):  # plain task arithmetic: ||w*tau|| = ||tau||, an fp32 delta read in place
        tau = delta.to(torch.bfloat16) if bf16 else delta
        plain = merge_tensor("t", theta, tau, [1.0]).norms
        assert plain[0] == plain[1] == step_sums(tau, None)[1] == pytest.approx(float((tau.double() ** 2).sum()),
                                                                                 rel=1e-5)
    outside = merge_tensor("t", theta, delta, [1.0], weighting=weighting)  # w = 0: the target, tau only measured
    assert same_bits(outside.checked()[0], theta) and outside.norms == (0.0, step_sums(delta, None)[1])
    step = StepNorm()
    step.add("a", merged.norms)
    step.add("b", outside.norms)
    assert step.ratio == pytest.approx((exact[0] / (2 * exact[1])) ** 0.5, rel=1e-5)
    assert step.step(-3.0) == float(f"{3 * step.ratio:.6g}") and StepNorm().ratio == 0.0
