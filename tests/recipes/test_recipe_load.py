"""Reading a recipe: every bad key or value is one line naming its YAML path; --set, seeds, the resolved recipe."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import ExitCode, RecipeError
from perta_hub.recipes.load import dump_yaml, load_recipe
from perta_hub.recipes.plan import make_plan

#: a small valid recipe; the tests change one thing at a time with --set or a text edit
RECIPE = """\
description: a recipe for the tests
models:
  base: org/model@main
data:
  forget: tofu:forget01
  retain-authors: {from: tofu:full, rows: "0:8"}
  target-data: {concat: ["${retain-authors}", "${forget}"]}
defaults:
  all: {device: cpu}
  evaluate: {forget-split: forget01, data-dir: "${tofu}", max-examples: 4}
steps:
  target: {command: finetune, model: "${base}", data: "${target-data}", epochs: 1, lr: 1e-4, warmup: 0}
  task-vector: {command: task-vector, model: "${target}", forget: "${forget}", epochs: 1, warmup: 0}
  wm: {command: compute-weights, model: "${target}", forget: "${forget}", retain: "${retain-authors}",
       method: fisher}
  perta: {command: apply, model: "${target}", task-vector: "${task-vector}", weights: "${wm}", step: [1, 2]}
  ga: {command: unlearn, method: ga, model: "${target}", forget: "${forget}", lr: 1e-5}
  eval: {command: evaluate, models: ["${target}", "${perta}", "${ga}"], retain-model: "${base}"}
  results: {command: report, evaluations: "${eval}"}
"""


def write(tmp_path: Path, text: str = RECIPE, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, *sets: str, text: str = RECIPE) -> str:
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, text), sets=sets)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_valid_recipe_is_read_with_its_defaults_and_references(tmp_path):
    recipe = load_recipe(write(tmp_path))
    assert list(recipe.steps) == ["target", "task-vector", "wm", "perta", "ga", "eval", "results"]
    target = recipe.steps["target"]
    assert target.values["epochs"] == 1 and target.values["lr"] == 1e-4  # 1e-4 is a number (YAML 1.2)
    assert target.values["device"] == "cpu"  # defaults.all
    assert recipe.steps["eval"].values["max_examples"] == 4  # defaults.evaluate
    assert recipe.steps["perta"].values["steps"] == (1, 2)  # apply --step
    assert str(recipe.steps["eval"].values["models"][1]) == "${perta}"


@pytest.mark.parametrize(("sets", "expected"), [
    (["steps.ga.lr=-1"], r"^steps\.ga\.lr: must be > 0 \(got -1\)$"),
    (["steps.ga.lr=fast"], r"^steps\.ga\.lr: must be a number \(got 'fast'\)$"),
    (["steps.ga.epochs=[1, 2]"], r"^steps\.ga\.epochs: must be a number \(got list \[1, 2\]\)$"),
    (["steps.ga.method=gradient"], r"^steps\.ga\.method: must be one of ga, gd, npo \(got 'gradient'\)$"),
    (["steps.wm.retain-fraction=1.5"], r"^steps\.wm\.retain-fraction: must be > 0 and <= 1 \(got 1\.5\)$"),
    (["steps.ga.lrr=1"], r"^steps\.ga\.lrr: unknown key; did you mean lr\?; unlearn takes: command, label, seeded, "
                         r"model, method, forget, retain, .*lr,"),
    (["steps.wm.retain_fraction=0.5"], r"^steps\.wm\.retain_fraction: unknown key \(keys are written as on the "
                                       r"command line: retain-fraction\)"),
    (["steps.ga.output=/tmp/x"], r"^steps\.ga\.output: not set in a recipe: the runner writes every step to "),
    (["steps.perta.dry-run=true"], r"^steps\.perta\.dry-run: not set in a recipe: plan the whole recipe"),
    (["steps.ga.command=forget"], r"^steps\.ga\.command: must be one of push, apply, .*report \(got 'forget'\)$"),
    (["steps.perta.weights=${wmm}"], r"^steps\.perta\.weights: \$\{wmm\} names no model, data entry or step; did "
                                     r"you mean \$\{wm\}\?; known: base, forget, "),
    (["steps.perta.weights=x${wm}"], r"^steps\.perta\.weights: 'x\$\{wm\}' is not a reference; "),
    (["steps.target.model=${perta}"], r"^steps: the steps need each other's outputs in a cycle: "
                                      r"target -> perta -> target$"),
    (["data.forget={from: '${target-data}', rows: '0:2'}"], r"^data: the entries refer to each other in a cycle: "),
    (["data.forget={from: tofu:full, rows: 'a:b'}"], r"^data\.forget\.rows: must be START:STOP with integers"),
    (["steps.perta.alpha=[1]"], r"^steps\.perta: --alpha and --step exclude each other"),
    (["steps.perta.step=[0]"], r"^steps\.perta: --step 0 is not > 0"),
    (["steps.perta.step=null"], r"^steps\.perta: give --alpha A \(the scale of tau\) or --step S"),
    (["steps.ga2={command: report, evaluations: '${eval}'}"], r"^steps\.ga2: a recipe has one report step"),
    (["steps.ga.retain=${forget}"], r"^steps\.ga: --method ga uses only the forget data; drop --retain"),
    (["steps.target.warmup=3"], r"^steps\.target: --warmup 3(\.0)? epochs is longer than --epochs 1"),
    (["defaults.all.lrr=1"], r"^defaults\.all\.lrr: unknown key; did you mean lr\?; no command has it; keys: "),
    (["defaults.evaluate.max-examples=0"], r"^defaults\.evaluate\.max-examples: must be >= 1 \(got 0\)$"),
    (["seeds=0"], r"^seeds: must be >= 1 \(got 0\)$"),
    (["seeds=[1, 1]"], r"^seeds: must be K >= 1 or a list of distinct integers"),
    (["stepz.a=1"], r"^stepz: unknown key; did you mean steps\?; a recipe has the keys: description, output, "),
    (["steps.data={command: report}"], r"^steps\.data: a name is letters, digits"),
    (["models.target=org/x"], r"^steps\.target: the name 'target' is already used in models"),
    (["steps.eval.models=${nothing}"], r"^steps\.eval\.models: \$\{nothing\} names no model"),
    (["steps.eval.models=[${x}]"], r"^--set steps\.eval\.models: line 1, column 3: not valid YAML: .*\(a reference "
                                   r"inside \[ \] or \{ \} is quoted: \"\$\{name\}\"\)$"),
    (["steps.eval.models=[]"], r"^steps\.eval\.models: is required"),
    (["steps.ga.seed=x"], r"^steps\.ga\.seed: must be an integer \(got 'x'\)$"),
    (["steps.perta.allow-pickle=yes please"], r"^steps\.perta\.allow-pickle: must be true or false"),
    (["bad"], r"^--set 'bad': use KEY=VALUE"),
    (["steps.ga.lr.x=1"], r"^--set steps\.ga\.lr\.x: steps\.ga\.lr is not a mapping"),
])
def test_a_bad_recipe_is_one_line_naming_the_yaml_path(tmp_path, sets, expected):
    message = error_of(tmp_path, *sets)
    assert re.search(expected, message), message


def test_yaml_errors_and_duplicate_keys_name_the_line(tmp_path):
    message = error_of(tmp_path, text="steps:\n  a: {command: report\n")
    assert message.startswith(f"{tmp_path / 'r.yaml'}: line ") and "not valid YAML" in message
    message = error_of(tmp_path, text="steps:\n  a: {command: report}\n  a: {command: report}\n")
    assert "line 3" in message and "duplicate key 'a'" in message
    assert error_of(tmp_path, text="- a\n").startswith(f"{tmp_path / 'r.yaml'}: a recipe is a YAML mapping")


def test_the_cli_prints_one_line_and_exits_non_zero(tmp_path):
    result = CliRunner().invoke(main, ["run", str(write(tmp_path)), "--set", "steps.ga.lr=-1", "--dry-run"])
    assert result.exit_code == ExitCode.ERROR
    assert result.output == "Error: steps.ga.lr: must be > 0 (got -1)\n"
    result = CliRunner().invoke(main, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == ExitCode.ERROR and result.output.count("\n") == 1 and "no such recipe" in result.output


def test_set_changes_values_adds_keys_and_steps(tmp_path):
    recipe = load_recipe(write(tmp_path), sets=[
        "steps.ga.lr=3e-5", "models.base=./local-model", "steps.extra={command: evaluate, models: '${ga}'}",
        "defaults.all.device=auto", "steps.wm.max-examples=2"])
    assert recipe.steps["ga"].values["lr"] == 3e-5
    assert recipe.models["base"] == str((tmp_path / "local-model").resolve())  # relative to the recipe
    assert "extra" in recipe.steps
    assert recipe.steps["target"].values["device"] == "auto"
    assert recipe.steps["wm"].values["max_examples"] == 2


def test_a_steps_own_value_wins_over_the_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path), sets=["defaults.apply.step=[3]", "defaults.apply.alpha=[5]",
                                                "steps.eval.max-examples=2", "steps.eval.retain-model=null"])
    assert recipe.steps["perta"].values["steps"] == (1, 2)  # apply --step and "alphas" not in recipe.steps["perta"].values
    assert recipe.steps["eval"].values["max_examples"] == 2
    assert "retain_model" not in recipe.steps["eval"].values  # null unsets a default or a value


def test_flag_aliases_and_on_off_flags(tmp_path):
    recipe = load_recipe(write(tmp_path), sets=[
        "steps.tune={command: tune, model: '${target}', task-vector: '${task-vector}', forget: '${forget}', "
        "retain: '${forget}', alpha: [1, 2], alpha-range: null}",
        "steps.target.push=me/target", "steps.target.private=false"])
    assert recipe.steps["tune"].values["alphas"] == (1, 2)  # --alpha/--alphas: either name
    assert recipe.steps["target"].values["private"] is False


def test_seeds_run_the_unlearning_stage_once_per_seed(tmp_path):
    recipe = load_recipe(write(tmp_path), seeds=2)
    assert recipe.seeds == (0, 1)
    plan = make_plan(recipe, tmp_path / "out")
    titles = [i.title for i in plan.instances]
    # the target and the unsubsampled weight map (at the target) run once; the task vector and the baseline are
    # re-seeded, and everything that uses them runs once per seed
    assert titles[:2] == ["target", "wm"]
    assert titles[2:] == [f"{n} (seed {s})" for s in (0, 1) for n in ("task-vector", "perta", "ga", "eval", "results")]
    reseeded = {i.title for i in plan.instances if i.reseeded}
    assert reseeded == {f"{n} (seed {s})" for s in (0, 1) for n in ("task-vector", "ga")}
    assert plan.instances[2].folder == tmp_path / "out" / "seed-0" / "task-vector"
    perta = next(i for i in plan.instances if i.title == "perta (seed 1)")
    assert [d.title for d in perta.needs] == ["target", "task-vector (seed 1)", "wm"]

    subsampled = load_recipe(write(tmp_path), sets=["seeds=[3, 7]", "steps.wm.max-examples=4"])
    plan = make_plan(subsampled, tmp_path / "out")
    assert {i.title for i in plan.instances if i.name == "wm"} == {"wm (seed 3)", "wm (seed 7)"}
    assert error_of(tmp_path, "seeds=2", "steps.ga.seed=5") == (
        "steps.ga.seed: set by seeds (each seed runs the step with its own seed); drop it, or drop seeds")
    assert error_of(tmp_path, "steps.perta.seeded=true").startswith("steps.perta.seeded: apply has no seed option")


def test_only_selects_a_step_and_what_it_needs(tmp_path):
    plan = make_plan(load_recipe(write(tmp_path)), tmp_path / "out")
    assert [i.name for i in plan.select(("perta",))] == ["target", "task-vector", "wm", "perta"]
    with pytest.raises(RecipeError, match=r"^--only nope: no such step; steps: target, task-vector, "):
        plan.select(("nope",))


def test_the_resolved_recipe_reads_back_to_the_same_recipe(tmp_path):
    recipe = load_recipe(write(tmp_path), sets=["steps.ga.lr=2e-5"], seeds=2)
    (tmp_path / "out").mkdir()
    resolved = write(tmp_path / "out", dump_yaml(recipe.resolved(tmp_path / "out")), "recipe.resolved.yaml")
    again = load_recipe(resolved)
    assert again.sha256() == recipe.sha256()
    assert again.output == str(tmp_path / "out") and again.seeds == (0, 1)
    doc = again.resolved()
    assert doc["steps"]["ga"]["lr"] == 2e-5 and doc["steps"]["ga"]["device"] == "cpu"
    assert doc["steps"]["ga"]["batch-size"] == 4  # every default pinned
    assert "defaults" not in doc


def test_keys_follow_the_options_and_the_inputs(tmp_path):
    out = tmp_path / "out"
    plan = make_plan(load_recipe(write(tmp_path)), out)
    target = plan.instances[0]
    key = plan.key(target)
    assert key is not None and plan.key(make_plan(load_recipe(write(tmp_path)), out).instances[0]) == key
    other = make_plan(load_recipe(write(tmp_path), sets=["steps.target.lr=2e-4"]), out)
    assert other.key(other.instances[0]) != key
    changed = make_plan(load_recipe(write(tmp_path), sets=["data.retain-authors={from: tofu:full, rows: '0:9'}"]),
                        out)
    assert changed.key(changed.instances[0]) != key  # the derived data's rows changed
    assert plan.key(plan.instances[1]) is None  # the task vector waits for the target's outputs


def test_defaults_all_gives_no_training_option_to_a_difference_task_vector(tmp_path):
    recipe = load_recipe(write(tmp_path), sets=[
        "defaults.all.max-length=128", "steps.diff={command: task-vector, base: '${base}', finetuned: '${target}'}"])
    assert "device" not in recipe.steps["diff"].values and "max_length" not in recipe.steps["diff"].values
    assert recipe.steps["task-vector"].values["max_length"] == 128


def test_a_failing_step_is_one_line_named_by_its_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    recipe = write(tmp_path, "steps:\n  tv: {command: apply, model: ./nowhere, task-vector: ./nowhere, alpha: 1}\n")
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.ERROR
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and error[0].startswith("Error: steps.tv: "), result.output
    state = json.loads((tmp_path / "out" / ".recipe" / "tv.json").read_text())
    assert state["status"] == "running"  # not finished: the next run tries it again


def test_derived_data_is_written_with_the_rows_common_fields(tmp_path):
    from perta_hub.recipes.data import DataSet, load_rows

    recipe = load_recipe(write(tmp_path), sets=["data.mixed={concat: ['${forget}', {from: tofu:forget01_perturbed, "
                                                "rows: '-2:'}]}"])
    data = DataSet(recipe.data)
    rows = data.rows(recipe.data["mixed"])
    assert len(rows) == 42 and set(rows[0]) == {"question", "answer"}
    assert rows[-1]["question"] == load_rows("tofu:forget01_perturbed")[-1]["question"]
    assert data.rows(recipe.data["target-data"])[:8] == [
        {"question": r["question"], "answer": r["answer"]} for r in load_rows("tofu:full")[:8]]
    path = data.write("mixed", tmp_path / "data")
    assert json.loads(path.read_text()) == rows
    mtime = path.stat().st_mtime_ns
    data.write("mixed", tmp_path / "data")
    assert path.stat().st_mtime_ns == mtime  # the same rows: left as it is
