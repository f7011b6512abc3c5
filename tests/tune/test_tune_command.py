"""perta-hub tune end to end on tiny models: the chosen model is apply's bytes, the search is recorded; bad
inputs are one line and write nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import perta_hub
from perta_hub.cli import main
from perta_hub.merge.apply import apply
from perta_hub.merge.task_vector import task_vector
from tests.helpers import make_weight_map, tree_digest

FAST = ["--forget", "tofu:forget01", "--retain", "tofu:retain99", "--forget-examples", "6", "--retain-examples",
        "6", "--max-evals", "4", "--grid-points", "2", "--alpha-range", "0.5", "6", "--device", "cpu"]


@pytest.fixture
def pair(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    return base, task_vector(base, tuned, tmp_path / "tv", progress=False)


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output.strip()


def weight_files(folder):
    return {k: v for k, v in tree_digest(folder).items() if k.startswith("model") or k.endswith(".json")
            and k not in ("perta_config.json",)}


def test_tune_writes_apply_bytes_and_records_the_search(tmp_path, pair):
    base, tv = pair
    wm = make_weight_map(tmp_path / "wm", base)
    before = tree_digest(base), tree_digest(tv), tree_digest(wm)
    code, out = run_cli("tune", base, "--task-vector", tv, "--weights", "none", "--weights", wm, "-o",
                        tmp_path / "out", "--utility-budget", "0.99", "--rouge-questions", "1", "--max-new-tokens", "8", *FAST)
    assert code == 0, out
    assert "| weights | alpha |" in out and out.count("**chosen**") == 2
    for label, w in (("tv", None), ("wm", wm)):
        folder = tmp_path / "out" / label
        config = json.loads((folder / "perta_config.json").read_text())
        tune = config["tune"]
        alpha = tune["chosen"]
        assert config["alpha"] == alpha and tune["budget"] == 0.99
        stages = ["grid", "grid", "bisect", "bisect"] if tune["bracket"] else ["grid", "grid"]
        assert [p["stage"] for p in tune["points"]] == stages
        # tune's report says how many alphas it evaluated
        assert f"{label}: {len(stages)} alphas evaluated (2 on the grid, {len(stages) - 2} by bisection)" in out
        kept = [p for p in tune["points"] if p["feasible"]]
        assert all(p["retain_prob"] >= 0.99 * tune["reference"]["retain_prob"] for p in kept)
        assert max(kept, key=lambda p: p["forget_nll"])["alpha"] == alpha
        assert "forget_rouge" in tune["points"][0] and tune["data"]["forget"]["examples"] == 6
        assert "tune.png" in config["files"] and (folder / "tune.png").stat().st_size > 1000
        card = (folder / "README.md").read_text()
        assert "## Choosing alpha" in card and "**chosen**" in card and "![alpha search](tune.png)" in card
        (ref,) = apply(base, tv, alphas=[alpha], weights=w, out_dir=tmp_path / f"apply-{label}", device="cpu",
                       progress=False)
        assert weight_files(folder) == weight_files(ref) and weight_files(ref)
    assert (tree_digest(base), tree_digest(tv), tree_digest(wm)) == before
    # a re-run finds the same choice and rewrites no weight
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "tv").glob("model*.safetensors")}
    code, out = run_cli("tune", base, "--task-vector", tv, "--weights", "none", "--weights", wm, "-o",
                        tmp_path / "out", "--utility-budget", "0.99", "--rouge-questions", "1", "--max-new-tokens", "8", *FAST)
    assert code == 0, out
    assert shards == {p: p.stat().st_mtime_ns for p in shards}


def test_python_api(tmp_path, pair):
    base, tv = pair
    run = perta_hub.tune(base, tv, forget="tofu:forget01", retain="tofu:retain99", out_dir=tmp_path / "out",
                         utility_budget=0.5, alphas=[0.5, 2.0], max_evals=2, forget_examples=4, retain_examples=4,
                         device="cpu", progress=False)
    assert run["outputs"] == [tmp_path / "out"] and set(run["chosen"]) == {"tv"}
    config = json.loads((tmp_path / "out" / "perta_config.json").read_text())
    assert config["tune"]["grid"] == [0.5, 2.0]
    assert config["step_norm"] == config["alpha"] == run["chosen"]["tv"]  # TV: ||alpha tau|| / ||tau|| = alpha


def assert_one_line_error(code, output, *needles):
    assert code != 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and "Traceback" not in output, output
    assert sum(line.startswith("Error") for line in lines) == 1, output
    for needle in needles:
        assert needle in lines[-1], output


@pytest.mark.parametrize("budget", ["0", "1.5", "-1"])
def test_budget_outside_0_1(tmp_path, pair, budget):
    base, tv = pair
    code, out = run_cli("tune", base, "--task-vector", tv, "-o", tmp_path / "out", "--utility-budget", budget, *FAST)
    assert code != 0 and "--utility-budget" in out and "Traceback" not in out, out
    assert not (tmp_path / "out").exists()
    with pytest.raises(perta_hub.InputError, match=r"--utility-budget must be in \(0, 1\]"):
        perta_hub.tune(base, tv, forget="tofu:forget01", retain="tofu:retain99", out_dir=tmp_path / "out",
                       utility_budget=float(budget), progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_data_file(tmp_path, pair):
    base, tv = pair
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    before = tree_digest(base), tree_digest(tv)
    args = [*FAST]
    args[args.index("tofu:retain99")] = str(empty)
    code, out = run_cli("tune", base, "--task-vector", tv, "-o", tmp_path / "out", *args)
    assert_one_line_error(code, out, "retain data", "empty")
    assert not (tmp_path / "out").exists() and (tree_digest(base), tree_digest(tv)) == before


def test_task_vector_for_another_model(tmp_path, pair, make_model):
    base, _ = pair
    other = make_model("other", intermediate_size=48)
    other_tv = task_vector(other, make_model("other-tuned", seed=3, intermediate_size=48), tmp_path / "tv2",
                           progress=False)
    code, out = run_cli("tune", base, "--task-vector", other_tv, "-o", tmp_path / "out", *FAST)
    assert_one_line_error(code, out, "task vector")
    assert not (tmp_path / "out").exists()


def test_conflicting_grid_options(tmp_path, pair):
    base, tv = pair
    code, out = run_cli("tune", base, "--task-vector", tv, "-o", tmp_path / "out", "--alpha", "1", *FAST)
    assert_one_line_error(code, out, "--alpha", "--alpha-range")
    assert not (tmp_path / "out").exists()


def test_alphas_as_a_comma_separated_list(tmp_path, pair):
    base, tv = pair
    i = FAST.index("--alpha-range")
    fast = FAST[:i] + FAST[i + 3:]  # without --alpha-range LO HI
    code, out = run_cli("tune", base, "--task-vector", tv, "-o", tmp_path / "out", "--alphas", "0.5,2",
                        "--alpha", "1", "--utility-budget", "0.5", *fast)
    assert code == 0, out
    tune = json.loads((tmp_path / "out" / "perta_config.json").read_text())["tune"]
    assert tune["grid"] == [0.5, 1.0, 2.0]
    code, out = run_cli("tune", base, "--task-vector", tv, "-o", tmp_path / "bad", "--alphas", "0.5,x", *fast)
    assert_one_line_error(code, out, "--alpha must be a number")
    assert not (tmp_path / "bad").exists()
