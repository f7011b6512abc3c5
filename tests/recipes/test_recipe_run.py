"""`perta-hub run` end to end on a tiny model: outputs, records, reuse, --set, seeds, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.recipes import load_recipe
from perta_hub.records import read_record

#: every kind of step on a Llama of 45k parameters, 8 + 8 training rows, 4 evaluated rows per split
TINY = """\
description: a tiny end-to-end recipe
torch-threads: 1
data:
  forget-few: {from: tofu:forget01, rows: "0:8"}
  retain-authors: {from: tofu:full, rows: "0:8"}
  target-data: {concat: ["${retain-authors}", "${forget-few}"]}
defaults:
  all: {device: cpu, max-length: 128}
  finetune: {epochs: 2, lr: 3.0e-3, batch-size: 8, grad-accum: 1, warmup: 0, weight-decay: 0}
  evaluate: {forget-split: forget01, data-dir: "${tofu}", max-examples: 4, batch-size: 8, max-new-tokens: 8}
steps:
  init: {command: tiny-model, tokenizer-data: tofu:forget01, vocab-size: 384, hidden-size: 32, layers: 2,
         intermediate-size: 64, heads: 4}
  target: {command: finetune, model: "${init}", data: "${target-data}"}
  retain: {command: finetune, model: "${init}", data: "${retain-authors}"}
  task-vector: {command: task-vector, model: "${target}", forget: "${forget-few}", epochs: 1, lr: 3.0e-3,
                batch-size: 8, grad-accum: 1, warmup: 0}
  wm-fisher: {command: compute-weights, model: "${target}", forget: "${forget-few}", retain: "${retain-authors}",
              method: fisher}
  tv: {command: apply, model: "${target}", task-vector: "${task-vector}", alpha: [1, 2]}
  perta-fisher: {command: apply, model: "${target}", task-vector: "${task-vector}", weights: "${wm-fisher}",
                 step: [1, 2]}
  ga: {command: unlearn, method: ga, model: "${target}", forget: "${forget-few}", epochs: 1, lr: 1.0e-3,
       batch-size: 8, warmup: 0}
  eval: {command: evaluate, models: ["${target}", "${tv}", "${perta-fisher}", "${ga}"], retain-model: "${retain}"}
  results: {command: report, evaluations: "${eval}"}
"""
STEPS = ["init", "target", "retain", "task-vector", "wm-fisher", "tv", "perta-fisher", "ga", "eval", "results"]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """The hash cache and the measured rates of this test only."""
    env = {"PERTA_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **env}


def states(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / ".recipe").glob("*.json")}


def run(*args: str) -> str:
    result = CliRunner().invoke(main, ["run", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.slow
def test_a_recipe_runs_end_to_end_records_itself_and_reuses_what_did_not_change(tmp_path, isolated):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "out"
    output = run(str(recipe), "-o", str(out))
    report = [str(out / name) for name in ("results.md", "results.png", "report.html")]
    assert f"10 step(s) run, 0 reused; outputs in {out}" in output
    assert output.rstrip().endswith("\n".join(["Report:", *(f"  {f}" for f in report)]))

    summary = json.loads((out / "results.json").read_text())
    rows = summary["rows"]
    assert [r["method"] for r in rows] == ["retain", "target", "tv", "tv", "perta-fisher", "perta-fisher", "ga"]
    ratio = summary["weight_maps"]["perta-fisher"]["groups"]["all"]["norm_w_tau_over_norm_tau"]
    fisher = [r for r in rows if r["method"] == "perta-fisher"]
    assert [r["alpha"] for r in fisher] == pytest.approx([s / ratio for s in (1, 2)], rel=1e-3)  # apply --step
    assert [r["step_norm"] for r in fisher] == pytest.approx([1.0, 2.0])
    assert [r["step_norm"] for r in rows if r["method"] == "tv"] == pytest.approx([1.0, 2.0])
    assert (out / "perta-fisher" / "step-2.0").is_dir() and (out / "tv" / "alpha-2.0").is_dir()
    assert [r["setting"] for r in rows if r["method"] == "ga"] == ["lr=0.001,ep=1"]
    md = (out / "results.md").read_text()
    assert md.startswith("# TOFU forget01 unlearning report (`perta-hub run tiny`)")
    assert "| target | 16 rows: target-data = retain-authors (8) + forget-few (8); 2 epochs" in md
    assert "| perta-fisher |" in md and "**perta-fisher**: PerTA (" in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["config"]["recipe_sha256"] == summary["recipe"]["sha256"]

    # every artifact records the recipe (its sha256: the resolved recipe's) and the step, and the step's command
    resolved = out / "recipe.resolved.yaml"
    sha = load_recipe(resolved).sha256()
    done = states(out)
    for step in ("target", "retain", "task-vector", "wm-fisher", "tv", "perta-fisher", "ga"):
        for folder in done[step]["outputs"]:
            record = read_record(out / folder)
            assert record.recipe.sha256 == sha and record.recipe.step == step
            assert Path(record.recipe.file).read_text() == resolved.read_text()
            assert record.command == " ".join(done[step]["argv"])
    assert done["tv"]["argv"][:3] == ["perta-hub", "apply", str(out / "target")]

    # the resolved recipe reproduces the run: here, every step reused
    output = run(str(resolved))
    assert all(f"{step}: reused" in output for step in STEPS), output
    assert states(out) == done

    # a changed option reruns that step and what uses it, nothing else
    output = run(str(recipe), "-o", str(out), "--set", "steps.tv.alpha=[1, 3]", "--dry-run")
    assert "Nothing was written" in output and states(out) == done
    plan = {line.split()[1]: line.split()[3] for line in output.splitlines() if line.strip()[:1].isdigit()}
    assert {s for s, status in plan.items() if status == "run"} == {"tv", "eval", "results"}
    output = run(str(recipe), "-o", str(out), "--set", "steps.tv.alpha=[1, 3]")
    assert "3 step(s) run, 7 reused" in output
    again = states(out)
    assert {s for s in STEPS if again[s]["finished"] != done[s]["finished"]} == {"tv", "eval", "results"}
    assert not (out / "tv" / "alpha-2.0").exists() and (out / "tv" / "alpha-3.0").is_dir()  # stale outputs gone
    assert sorted(r["alpha"] for r in json.loads((out / "results.json").read_text())["rows"]
                  if r["method"] == "tv") == [1.0, 3.0]


@pytest.mark.slow
def test_seeds_repeat_the_unlearning_stage(tmp_path, isolated):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "out"
    output = run(str(recipe), "-o", str(out), "--seeds", "2", "--only", "results",
                 "--set", "steps.eval.models=['${target}', '${tv}', '${perta-fisher}', '${ga}']")
    assert output.rstrip().endswith(f"  {out / 'seed-1' / 'report.html'}\n  {out / 'results.md'}")
    # the target, retain models and the weight map (over all its retain rows) run once; --only results runs what
    # the report needs
    assert {p.stem for p in (out / ".recipe").glob("*.json")} == {"init", "target", "retain", "wm-fisher"}
    for seed in (0, 1):
        root = out / f"seed-{seed}"
        assert {p.stem for p in (root / ".recipe").glob("*.json")} == {"task-vector", "tv", "perta-fisher", "ga",
                                                                        "eval", "results"}
        assert read_record(root / "task-vector").get("training")["seed"] == seed
        assert read_record(root / "ga").get("training")["seed"] == seed
        assert read_record(root / "task-vector").recipe.seed == seed
        assert json.loads((root / "results.json").read_text())["recipe"]["seed"] == seed
    assert read_record(out / "seed-0" / "task-vector").files != read_record(out / "seed-1" / "task-vector").files
    combined = json.loads((out / "results.json").read_text())
    assert set(combined["seeds"]) == {"0", "1"}
    # the spread over the seeds comes first: fronts, best within the budget, PerTA against TV and GA per seed
    spread = combined["spread"]
    assert spread["seeds"] == [0, 1] and spread["forget_rows"] == 4
    assert spread["seeding"] == {"re-seeded": ["task-vector", "ga"], "per seed": ["tv", "perta-fisher", "eval",
                                                                                   "results"],
                                 "once": ["init", "target", "retain", "wm-fisher"]}
    assert [f["setting"] for f in spread["fronts"]["perta-fisher"]] == ["step 1", "step 2"]
    assert [f["setting"] for f in spread["fronts"]["tv"]] == ["alpha 1", "alpha 2"]
    assert all(f["seeds"] == 2 for front in spread["fronts"].values() for f in front)
    assert [(c["a"], c["b"]) for c in spread["comparisons"]] == [("perta-fisher", "tv"), ("perta-fisher", "ga")]
    for comp in spread["comparisons"]:
        assert [c["seed"] for c in comp["per_seed"]] == [0, 1] and comp["answer"]
        for c in comp["per_seed"]:  # the paired bootstrap ran where both kept the budget
            assert (c["bootstrap"] is not None) == (c["a"] is not None and c["b"] is not None), c
    md = (out / "results.md").read_text()
    assert md.index("## Across the 2 seeds (0, 1)") < md.index("### The answer: does PerTA beat TV") < md.index(
        "## Seed 0") < md.index("## Seed 1")
    assert "**Re-seeded** (their `seed` set to each seed): `task-vector`, `ga`." in md


@pytest.mark.slow
def test_run_resumes_after_a_kill_at_any_step_without_redoing_finished_steps(tmp_path, isolated):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "perta_hub", "run", str(recipe), "-o", str(out)]

    def killed_when(ready) -> str:
        log = tmp_path / "log.txt"
        with log.open("w") as fh:
            proc = subprocess.Popen(command, env=isolated, stdout=fh, stderr=subprocess.STDOUT)
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline and not ready():
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        return log.read_text()

    finished: dict[str, str] = {}  # step -> its finish time, once finished
    mtimes: dict[str, float] = {}
    interrupted: list[str] = []  # steps killed while running
    # kill during the target's training (its folder claimed, not finished), then after each step in turn
    points = [("target", "running"), *((step, "finished") for step in STEPS[:-1])]
    for step, when in points:
        if step in finished:  # already done when the run before was killed: nothing new to wait for
            continue

        def ready(step=step, when=when) -> bool:
            state = states(out).get(step, {})
            return state.get("status") == "finished" or (
                when == "running" and state.get("status") == "running" and (out / step / ".perta-run").exists())

        log = killed_when(ready)
        for name, at in finished.items():  # every step finished before is reused, untouched
            assert f"{name}: reused" in log, (step, name, log[-2000:])
            assert states(out)[name]["finished"] == at
            assert (out / states(out)[name]["outputs"][0]).stat().st_mtime == mtimes[name]
        for name in interrupted:  # a step killed while running is resumed under the same key
            assert f"{name}: {states(out)[name]['command']} (resuming)" in log, log[-2000:]
        now = states(out)
        finished = {n: s["finished"] for n, s in now.items() if s["status"] == "finished"}
        mtimes = {n: (out / s["outputs"][0]).stat().st_mtime for n, s in now.items() if s["status"] == "finished"}
        interrupted = [n for n, s in now.items() if s["status"] == "running"]
    assert interrupted or "target" in finished
    result = subprocess.run(command, env=isolated, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert all(f"{name}: reused" in result.stderr for name in finished)
    assert set(STEPS) - set(finished) == {"results"} or "results: reused" not in result.stderr
    assert json.loads((out / "results.json").read_text())["rows"]
