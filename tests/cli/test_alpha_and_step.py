"""Inputs that make no sense, and the step norm: alpha <= 0 (apply, apply --stream, the Python API, tune), a weight map
whose every weight is zero, ``--step`` beside ``--alpha``; ``||alpha w*tau|| / ||tau||`` printed and recorded for
every output. Each refusal: the exact line, exit code 1, nothing written, the inputs untouched."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import perta_hub
from perta_hub.cli import main
from perta_hub.errors import ExitCode, InputError
from perta_hub.merge.task_vector import task_vector
from tests.helpers import RESTRICTED, load_state, make_weight_map, rewrite_tensors, tree_digest

NEGATIVE = ("Error: --alpha {a} is not > 0: a negative alpha adds the forget data's knowledge back and alpha 0 writes "
            "the target unchanged; pass --allow-negative-alpha (Python: allow_negative_alpha=True) to do it anyway")
TUNE_NEGATIVE = ("Error: {option} {a} is not > 0: a negative alpha adds the forget data's knowledge back and alpha 0 "
                 "writes the target unchanged; tune searches alpha > 0 (alpha 0, the target, is always evaluated as "
                 "the reference)")


@pytest.fixture
def pair(tmp_path: Path, make_model: Any) -> tuple[Path, Path]:
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    return base, task_vector(base, tuned, tmp_path / "tv", max_shard_size="30KB", progress=False)


def run_cli(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result: Any, line: str) -> None:
    """Exit code 1 and exactly ``line`` as the one error line (stderr), no traceback."""
    assert result.exit_code == ExitCode.ERROR, result.output
    errors = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert errors == [line] and "Traceback" not in result.output, result.stderr


def record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "perta_config.json").read_text())


def step_by_hand(tau: dict[str, Any], w: dict[str, Any] | None, rest: float = 1.0) -> float:
    """||w*tau|| / ||tau|| over every tensor of tau, in float64 (``rest``: w outside the map)."""
    num = den = 0.0
    for name, t in tau.items():
        t = t.double()
        weight = w[name].double() if w is not None and name in w else rest
        num += float(((weight * t) ** 2).sum())
        den += float((t ** 2).sum())
    return math.sqrt(num / den)


def weights_of(wm: Path) -> dict[str, Any]:
    i_f, i_r = load_state(wm, "importance_forget"), load_state(wm, "importance_retain")
    return {n: i_f[n].double() / (i_f[n].double() + i_r[n].double() + 1e-12) for n in i_f}


# -- alpha <= 0 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alphas", "shown"), [(["-1"], "-1"), (["0"], "0"), (["1", "-0.5"], "-0.5")])
def test_apply_refuses_alpha_not_above_zero(tmp_path, pair, alphas, shown):
    base, tv = pair
    before = tree_digest(base), tree_digest(tv)
    args = [x for a in alphas for x in ("--alpha", a)]
    refused(run_cli("apply", base, "--task-vector", tv, *args, "-o", tmp_path / "out"), NEGATIVE.format(a=shown))
    # --stream checks the alphas before the Hub is asked anything
    refused(run_cli("apply", base, "--task-vector", tv, *args, "-o", tmp_path / "out", "--stream", "--push", "u/x"),
            NEGATIVE.format(a=shown))
    with pytest.raises(InputError) as err:
        perta_hub.apply(base, tv, alphas=[float(a) for a in alphas], out_dir=tmp_path / "out", progress=False)
    assert f"Error: {err.value}" == NEGATIVE.format(a=shown)
    assert not (tmp_path / "out").exists() and (tree_digest(base), tree_digest(tv)) == before


def test_allow_negative_alpha_applies_it_and_records_the_step(tmp_path, pair):
    base, tv = pair
    result = run_cli("apply", base, "--task-vector", tv, "--alpha", "-1", "--alpha", "0", "--allow-negative-alpha",
                     "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"unlearned model written to {tmp_path / 'out' / 'alpha--1.0'}: alpha -1, step norm ||alpha w*tau|| / ||tau|| = 1",
        f"unlearned model written to {tmp_path / 'out' / 'alpha-0.0'}: alpha 0, step norm ||alpha w*tau|| / ||tau|| = 0"]
    assert record(tmp_path / "out" / "alpha--1.0")["step_norm"] == 1.0
    theta, tau = load_state(base), load_state(tv, "task_vector")
    assert all(torch.equal(load_state(tmp_path / "out" / "alpha-0.0")[n], theta[n]) for n in theta)
    out = perta_hub.apply(base, tv, alphas=[-0.5], out_dir=tmp_path / "api", allow_negative_alpha=True, progress=False)
    torch.testing.assert_close(load_state(out[0])["model.norm.weight"],
                               theta["model.norm.weight"] + 0.5 * tau["model.norm.weight"])


def test_tune_refuses_alpha_not_above_zero(tmp_path, pair):
    base, tv = pair
    data = ["--forget", "tofu:forget01", "--retain", "tofu:retain99", "--device", "cpu"]
    refused(run_cli("tune", base, "--task-vector", tv, "-o", tmp_path / "out", "--alphas", "0.5,-1", *data),
            TUNE_NEGATIVE.format(option="--alpha", a="-1"))
    refused(run_cli("tune", base, "--task-vector", tv, "-o", tmp_path / "out", "--alpha-range", "0", "2", *data),
            TUNE_NEGATIVE.format(option="--alpha-range", a="0"))
    assert not (tmp_path / "out").exists()


# -- weight maps whose weights are zero ----------------------------------------------------------------------


def zero_map(tmp_path: Path, base: Path, share: float = 1.0, name: str = "wm-zero") -> Path:
    """A weight map whose I_f is 0 on the first ``share`` of every tensor's entries (w = 0 there)."""
    wm = make_weight_map(tmp_path / name, base)

    def edit(state: dict[str, Any]) -> dict[str, Any]:
        for t in state.values():
            t.view(-1)[: round(share * t.numel())] = 0.0
        return state

    rewrite_tensors(wm, "importance_forget", edit)
    return wm


def test_an_all_zero_weight_map_is_refused(tmp_path, pair):
    base, tv = pair
    wm = zero_map(tmp_path, base)
    count = sum(t.numel() for t in load_state(wm, "importance_forget").values())
    line = (f"Error: the weight map {wm} gives w < 1e-06 on all {count:,} parameters it covers (100% zero weights at "
            "p=1, lam=1, eps=1e-12): the merge would write the target back unchanged; re-create the weight map or "
            "pass other --p/--lam/--eps")
    before = tree_digest(base), tree_digest(tv), tree_digest(wm)
    for extra in (("--alpha", "1"), ("--step", "0.5")):
        refused(run_cli("apply", base, "--task-vector", tv, "--weights", wm, *extra, "-o", tmp_path / "out"), line)
    refused(run_cli("tune", base, "--task-vector", tv, "--weights", wm, "-o", tmp_path / "out", "--forget",
                    "tofu:forget01", "--retain", "tofu:retain99", "--device", "cpu"), line)
    # a sane map made useless by its combination: eps far above every importance
    good = make_weight_map(tmp_path / "wm", base)
    result = run_cli("apply", base, "--task-vector", tv, "--weights", good, "--eps", "1e9", "--alpha", "1", "-o",
                     tmp_path / "out")
    refused(result, f"Error: the weight map {good} gives w < 1e-06 on all {count:,} parameters it covers (100% zero "
                    "weights at p=1, lam=1, eps=1e+09): the merge would write the target back unchanged; re-create the "
                    "weight map or pass other --p/--lam/--eps")
    assert not (tmp_path / "out").exists() and (tree_digest(base), tree_digest(tv), tree_digest(wm)) == before


def test_a_mostly_zero_weight_map_is_merged_with_one_warning(tmp_path, pair):
    base, tv = pair
    wm = zero_map(tmp_path, base, share=0.7, name="wm-70")
    result = run_cli("apply", base, "--task-vector", tv, "--weights", wm, "--alpha", "1", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: about 7") and warnings[0].endswith(
        f"% of the weights of {wm} are below 1e-06 at p=1, lam=1, eps=1e-12 (sampled): those parameters stay as the "
        "target's"), result.stderr
    untouched = make_weight_map(tmp_path / "wm", base)  # 0% zero: no warning
    result = run_cli("apply", base, "--task-vector", tv, "--weights", untouched, "--alpha", "1", "-o", tmp_path / "o2")
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr


# -- the step norm, recorded and printed ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [None, "all", "w=0", "w=1"])
def test_the_step_norm_is_recorded_and_printed(tmp_path, pair, kind):
    base, tv = pair
    tau = load_state(tv, "task_vector")
    wm = None
    if kind == "all":
        wm = make_weight_map(tmp_path / "wm", base)
    elif kind is not None:
        wm = make_weight_map(tmp_path / f"wm-{kind}", base, names=RESTRICTED, params="up_proj|q_proj",
                             unrestricted=kind)
    ratio = step_by_hand(tau, None if wm is None else weights_of(wm), rest=0.0 if kind == "w=0" else 1.0)
    extra = [] if wm is None else ["--weights", wm]
    result = run_cli("apply", base, "--task-vector", tv, *extra, "--alpha", "2", "--alpha", "0.5", "-o",
                     tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for alpha, line in zip((2.0, 0.5), result.stdout.splitlines(), strict=True):
        folder = tmp_path / "out" / f"alpha-{alpha}"
        norm = record(folder)["step_norm"]
        assert norm == pytest.approx(alpha * ratio, rel=1e-5), (norm, alpha * ratio)
        assert line == f"unlearned model written to {folder}: alpha {alpha:g}, step norm ||alpha w*tau|| / ||tau|| = " \
                       f"{norm:.4g}"
        assert "step" not in record(folder)
    if kind is None:
        assert record(tmp_path / "out" / "alpha-2.0")["step_norm"] == 2.0


def test_a_resumed_apply_records_the_whole_step_norm(tmp_path, pair, monkeypatch):
    """Shards written by an interrupted run are not merged again; their tensors' norms are read back."""
    from perta_hub.merge.apply import PerTAMergeJob

    base, tv = pair
    wm = make_weight_map(tmp_path / "wm", base)
    args = ["apply", base, "--task-vector", tv, "--weights", wm, "--alpha", "1.5", "--max-shard-size", "20KB",
            "--device", "cpu"]
    assert run_cli(*args, "-o", tmp_path / "reference").exit_code == 0
    last = list(load_state(base))[-1]
    combine = PerTAMergeJob.combine

    def interrupted(self: Any, name: str, loaded: Any) -> Any:
        if name == last:
            raise KeyboardInterrupt
        return combine(self, name, loaded)

    monkeypatch.setattr(PerTAMergeJob, "combine", interrupted)
    assert run_cli(*args, "-o", tmp_path / "out").exit_code != 0
    assert list((tmp_path / "out").glob("model-*.safetensors"))  # some shards are complete
    monkeypatch.setattr(PerTAMergeJob, "combine", combine)
    assert run_cli(*args, "-o", tmp_path / "out").exit_code == 0
    assert record(tmp_path / "out")["step_norm"] == record(tmp_path / "reference")["step_norm"]


# -- --step -------------------------------------------------------------------------------------------------------


def test_step_sets_alpha_from_the_norm(tmp_path, pair):
    base, tv = pair
    wm = make_weight_map(tmp_path / "wm", base)
    ratio = step_by_hand(load_state(tv, "task_vector"), weights_of(wm))
    result = run_cli("apply", base, "--task-vector", tv, "--weights", wm, "--step", "0.5", "--step", "1", "-o",
                     tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for step, line in zip((0.5, 1.0), result.stdout.splitlines(), strict=True):
        folder = tmp_path / "out" / f"step-{step}"
        config = record(folder)
        assert config["step"] == step and config["step_norm"] == step
        assert config["alpha"] == pytest.approx(step / ratio, rel=1e-5)
        assert line == (f"unlearned model written to {folder}: alpha {config['alpha']:g}, step norm ||alpha w*tau|| / "
                        f"||tau|| = {step:.4g} (--step {step:g})")
        # the same bytes as --alpha with that alpha
        (same,) = perta_hub.apply(base, tv, weights=wm, alphas=[config["alpha"]], out_dir=tmp_path / f"a-{step}",
                                  device="cpu", progress=False)
        assert all(torch.equal(a, b) for a, b in zip(load_state(same).values(), load_state(folder).values(),
                                                     strict=True))
    (api,) = perta_hub.apply(base, tv, steps=[0.25], out_dir=tmp_path / "tv-step", progress=False)
    assert record(api)["alpha"] == 0.25 and record(api)["step_norm"] == 0.25  # without a map: alpha = step


@pytest.mark.parametrize(("args", "line"), [
    (["--alpha", "1", "--step", "1"], "Error: --alpha and --step exclude each other: give the scale (--alpha) or the "
                                      "step norm (--step), not both"),
    ([], "Error: give --alpha A (the scale of tau) or --step S (the step norm ||alpha w*tau|| / ||tau||)"),
    (["--step", "0"], "Error: --step 0 is not > 0: it is the norm ||alpha w*tau|| / ||tau|| of the step (1 = the task "
                      "vector's own)"),
    (["--step", "-2"], "Error: --step -2 is not > 0: it is the norm ||alpha w*tau|| / ||tau|| of the step (1 = the "
                       "task vector's own)"),
    (["--step", "x"], "Error: --step must be a number, got 'x'"),
])
def test_bad_steps_are_one_line(tmp_path, pair, args, line):
    base, tv = pair
    refused(run_cli("apply", base, "--task-vector", tv, *args, "-o", tmp_path / "out"), line)
    assert not (tmp_path / "out").exists()


def test_step_of_a_zero_task_vector_is_refused(tmp_path, pair):
    base, tv = pair
    rewrite_tensors(tv, "task_vector", lambda s: {k: torch.zeros_like(v) for k, v in s.items()})
    refused(run_cli("apply", base, "--task-vector", tv, "--step", "1", "-o", tmp_path / "out"),
            f"Error: ||w*tau|| / ||tau|| is 0 for {tv}: no alpha reaches --step; check the task vector (is it zero?) "
            "and the weight map")
    assert not (tmp_path / "out").exists()


# -- compute-weights --task-vector -------------------------------------------------------------------------------


def test_compute_weights_prints_the_summary_and_the_step_ratio(tmp_path, pair):
    import re

    from tests.conftest import tofu_rows

    base, tv = pair
    data = {}
    for role, split in (("forget", "forget01"), ("retain", "retain99")):
        data[role] = tmp_path / f"{role}.json"
        data[role].write_text(json.dumps(tofu_rows(split)[:4]))
    args = ["compute-weights", base, "--forget", data["forget"], "--retain", data["retain"], "--method", "grad",
            "--device", "cpu"]
    # a wrong --task-vector is one line before any gradient, nothing written
    wrong = make_weight_map(tmp_path / "not-a-tv", base)
    refused(run_cli(*args, "--task-vector", wrong, "-o", tmp_path / "wm-bad"),
            f"Error: {wrong} is a weight_map artifact, not a task_vector; check the option you passed it to")
    assert not (tmp_path / "wm-bad").exists()

    result = run_cli(*args, "--task-vector", tv, "-o", tmp_path / "wm")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("compute-weights: done in") and lines[1].startswith("w = I_f^p / (I_f^p + lam I_r^p")
    table = [x for x in lines if x.startswith("| ")]
    assert table[0].startswith("| group | mean w |") and table[1].startswith("| all (‖w⊙τ‖/‖τ‖ ")
    assert any(x.startswith("| module:q_proj") for x in table) and not any("layer:" in x for x in table)
    match = re.fullmatch(rf"\|\|w\*tau\|\| / \|\|tau\|\| = ([0-9.]+) over every tensor of the task vector {re.escape(str(tv))}: "
                         r"apply --alpha A steps A x \1; apply --step S sets alpha = S / \1", lines[-1])
    assert match, lines[-1]
    # the same sums as apply's: the recorded step norm at alpha 1
    assert run_cli("apply", base, "--task-vector", tv, "--weights", tmp_path / "wm", "--alpha", "1", "-o",
                   tmp_path / "out", "--device", "cpu").exit_code == 0
    assert record(tmp_path / "out")["step_norm"] == pytest.approx(float(match.group(1)), abs=6e-4)
    # without --task-vector: the summary, no ratio line
    plain = run_cli(*args, "-o", tmp_path / "wm2")
    assert plain.exit_code == 0 and "| all |" in plain.stdout and "||w*tau||" not in plain.stdout, plain.output
