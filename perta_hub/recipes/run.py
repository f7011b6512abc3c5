"""``perta-hub run``: a recipe's steps in order, each reused when its key is unchanged, else run (or resumed).

Before the first step: ``OUT/recipe.resolved.yaml`` (the recipe with every value resolved: ``perta-hub run
OUT/recipe.resolved.yaml`` runs it again, every finished step reused) and a copy named by its sha256 under
``OUT/.recipe/recipes/`` (what the outputs' records point to), the derived data in ``OUT/data/``. Then each step
is reused if its state is finished under the same key with its outputs there; otherwise it runs, inside
:func:`perta_hub.runtime.invocation.in_recipe_step` (every folder it finishes records the recipe's sha256 and the
step). An interrupted try under the same key is left for the command to resume; a folder made under a changed key
is left for the command to keep when it holds this very run (``finetune``, ``apply``: "returned as is"), and
removed when the command refuses it as another run; what the new run did not remake is removed after it. The
step's state records its outputs, their identity and the time. A step that fails stops the run with its one-line
error; the steps before it stay finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import OutputError, PertaError
from perta_hub.recipes import estimate as estimates
from perta_hub.recipes.data import is_derived
from perta_hub.recipes.execute import clear, run_step
from perta_hub.recipes.load import Recipe, dump_yaml
from perta_hub.recipes.plan import Instance, Plan, make_plan
from perta_hub.recipes.state import STATE_DIR, identity_of, locked, now, outputs_exist, write_state

RESOLVED = "recipe.resolved.yaml"


@dataclass
class RunResult:
    """What a run did: the steps run and reused (titles) and the reports written."""

    out: Path
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)


def output_folder(recipe: Recipe, out: str | Path | None) -> Path:
    """``-o``, else the recipe's ``output``, else ``./<recipe name>_out`` (absolute)."""
    chosen = out if out is not None else recipe.output or f"{recipe.name}_out"
    return Path(chosen).expanduser().resolve()


def status(plan: Plan, inst: Instance, running: set[int]) -> tuple[str, str | None]:
    """``reuse``, ``resume`` or ``run``, and the key (None while a needed step is still to run)."""
    key = None if any(id(d) in running for d in inst.needs) else plan.key(inst)
    state = inst.state()
    if key is not None and state is not None and state.get("key") == key:
        if state.get("status") == "finished" and outputs_exist([plan.out / p for p in state.get("outputs", [])]):
            return "reuse", key
        if state.get("status") == "running":
            return "resume", key
    return "run", key


def describe(plan: Plan, selected: list[Instance]) -> list[str]:
    """The dry run's plan: one line per step (status, estimate, where the rate comes from), then the total."""
    running: set[int] = set()
    rows, total, unknown = [], 0.0, 0
    for n, inst in enumerate(selected, 1):
        state, _ = status(plan, inst, running)
        if state != "reuse":
            running.add(id(inst))
        guess = estimates.estimate(plan, inst) if state != "reuse" else estimates.Estimate(0.0, "")
        if guess.seconds is None:
            unknown += 1
        else:
            total += guess.seconds
        when = "" if state == "reuse" else ("?" if guess.seconds is None else duration(guess.seconds))
        rows.append([str(n), inst.title, inst.step.kind.name, state, when, guess.source])
    widths = [max(len(r[i]) for r in [["#", "step", "command", "status", "estimate", "rate"], *rows])
              for i in range(6)]
    lines = [f"Recipe {plan.recipe.name} (sha256 {plan.recipe.sha256()[:12]}) into {plan.out}:"]
    for row in [["#", "step", "command", "status", "estimate", "rate"], *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    reused = sum(r[3] == "reuse" for r in rows)
    lines.append(f"{len(rows)} steps: {reused} reused, {len(rows) - reused} to run, about {duration(total)}"
                 + (f" plus {unknown} step(s) without an estimate" if unknown else "") + ". Nothing was written.")
    lines.append(f"Rates: measured = this machine's earlier steps ({estimates.rates_file()}); built-in = "
                 f"{estimates.TABLE_SOURCE}, plus {estimates.OVERHEAD_S:g} s per step.")
    return lines


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``1 h 20 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


@contextmanager
def torch_threads(count: int | None) -> Iterator[Callable[[], None]]:
    """Yields a function that sets torch's CPU threads to ``count`` (torch imported then, the first time a step
    runs, not for a run that reuses every step); the count is restored after the block."""
    before: list[int] = []

    def ready() -> None:
        if count is not None and not before:
            import torch

            before.append(torch.get_num_threads())
            torch.set_num_threads(count)

    try:
        yield ready
    finally:
        if before:
            import torch

            torch.set_num_threads(before[0])


def run_recipe(recipe: Recipe, out: str | Path | None = None, *, only: Sequence[str] = (), dry_run: bool = False,
               echo: Callable[[str], None] = print, command_flags: Sequence[str] = ()) -> RunResult:
    """Run (or, with ``dry_run``, plan) a checked recipe into ``out`` (see the module's docstring).

    Args:
        only: run these steps and the unfinished steps they need, nothing else.
        echo: where the run's own lines go (each step's, the plan); the commands print as on the command line.
        command_flags: ``-q``/``-v`` passed to every command.
    """
    folder = output_folder(recipe, out)
    plan = make_plan(recipe, folder)
    selected = plan.select(tuple(only))
    result = RunResult(folder)
    if dry_run:
        for line in describe(plan, selected):
            echo(line)
        return result
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder), torch_threads(recipe.torch_threads) as ready:
        recipe_file = save_recipe(recipe, folder)
        for name, entry in recipe.data.items():
            if is_derived(entry):
                plan.data.write(name, folder / "data")
        for n, inst in enumerate(selected, 1):
            run_one(plan, inst, f"[{n}/{len(selected)}]", recipe_file, result, echo, list(command_flags), ready)
        result.reports = write_seed_index(plan, selected)
    return result


def save_recipe(recipe: Recipe, folder: Path) -> Path:
    """Write ``OUT/recipe.resolved.yaml`` and its sha256-named copy; returns the copy's path."""
    from perta_hub.io.atomic import write_atomic

    sha = recipe.sha256()
    head = (f"# written by perta-hub run: the recipe with every value resolved (sha256 {sha}).\n"
            f"# perta-hub run {folder / RESOLVED} reruns it here, every finished step reused.\n")
    text = head + dump_yaml(recipe.resolved(folder))
    write_atomic(folder / RESOLVED, text)
    copy = folder / STATE_DIR / "recipes" / f"{sha}.yaml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(copy, text)
    return copy


def run_one(plan: Plan, inst: Instance, counter: str, recipe_file: Path, result: RunResult,
            echo: Callable[[str], None], flags: list[str], ready: Callable[[], None]) -> None:
    """Reuse, resume or run one instance, recording its state (``ready``: called before a step runs)."""
    from perta_hub.records import RecipeRef
    from perta_hub.runtime.invocation import in_recipe_step
    from perta_hub.runtime.memory import peak_rss_gib

    state_now, key = status(plan, inst, set())
    assert key is not None  # every needed instance has finished
    previous = inst.state() or {}
    if state_now == "reuse":
        echo(f"== {counter} {inst.title}: reused (finished {previous.get('finished')}, "
             f"{previous.get('seconds', 0):.1f} s)")
        result.reused.append(inst.title)
        return
    stale = [p for p in (plan.out / o for o in previous.get("outputs", [])) if plan.out in p.parents] \
        if state_now == "run" and previous else []  # made under another key
    echo(f"== {counter} {inst.title}: {inst.step.kind.name}" + (" (resuming)" if state_now == "resume" else ""))
    ready()
    started = time.perf_counter()
    write_state(inst.root, inst.name, {"step": inst.name, "seed": inst.seed, "command": inst.step.kind.name,
                                       "key": key, "status": "running", "started": now()})
    ref = RecipeRef.from_dict({"sha256": plan.recipe.sha256(), "step": inst.name, "file": str(recipe_file),
                               **({"seed": inst.seed} if inst.seed is not None else {})})
    with in_recipe_step(ref):
        try:
            try:
                done = run_step(plan, inst, flags, echo)
            except OutputError:
                if not (state_now == "run" and previous):
                    raise
                # its folder holds another run (made under the old key): removed, and the step run again
                clear([*stale, inst.folder])
                done = run_step(plan, inst, flags, echo)
        except PertaError as err:  # the command's one line, named by its step
            message = str(err)
            if message.startswith(inst.step.path):
                raise
            raise type(err)(f"{inst.step.path}: {message}") from None
    clear([p for p in stale if p not in done.outputs  # what the old key made and this run did not remake
           and not any(p in o.parents for o in done.outputs)])
    seconds = round(time.perf_counter() - started, 1)
    write_state(inst.root, inst.name, {
        "step": inst.name, "seed": inst.seed, "command": inst.step.kind.name, "key": key, "status": "finished",
        "started": previous.get("started") if state_now == "resume" else None, "finished": now(),
        "seconds": seconds, "peak_rss_gib": peak_rss_gib(),
        "outputs": [str(p.relative_to(plan.out)) for p in done.outputs], "identity": identity_of(done.outputs),
        "argv": ["perta-hub", *done.argv] if done.argv else None, "extra": done.extra})
    estimates.remember(estimates.work_of(plan, inst), seconds)
    echo(f"   {inst.title}: {seconds:.1f} s")
    result.ran.append(inst.title)


def write_seed_index(plan: Plan, selected: list[Instance]) -> list[Path]:
    """The ``results.json`` of every report the run has; a report run once per seed also gets ``OUT/results.md``
    and ``OUT/results.json`` gathering every seed's (listed last). Both start with the spread over the seeds,
    with one seed its paired comparisons (:func:`perta_hub.evaluation.seeds.seed_spread`: ``"spread"`` in the
    JSON, a section before the seeds' reports in the markdown)."""
    from perta_hub.evaluation.seeds import seed_spread, spread_markdown
    from perta_hub.io.atomic import write_atomic

    reports = [i for i in selected if i.step.kind.name == "report" and (i.root / "results.json").is_file()]
    paths = [i.root / "results.json" for i in reports]
    seeded = [i for i in reports if i.seed is not None]
    if seeded:
        summaries = {i.seed: json.loads((i.root / "results.json").read_text()) for i in seeded}
        combined: dict[str, Any] = {"seeds": summaries}
        parts = [f"# {plan.recipe.name}: {len(seeded)} seed{'s' if len(seeded) > 1 else ''}\n"]
        results = {i.seed: best_results(plan, i, summaries[i.seed]) for i in seeded}
        combined["spread"] = seed_spread(summaries, results, seeding=seeding(seeded))
        parts.append(spread_markdown(combined["spread"]))
        write_atomic(plan.out / "results.json", json.dumps(combined, indent=2, default=str) + "\n")
        for i in seeded:
            parts.append(f"## Seed {i.seed} ([{i.root.name}/results.md]({i.root.name}/results.md))\n\n"
                         + (i.root / "results.md").read_text().replace("\n# ", "\n### ").replace("\n## ", "\n### "))
        write_atomic(plan.out / "results.md", "\n".join(parts))
        paths.append(plan.out / "results.json")
    return paths


def best_results(plan: Plan, report: Instance, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The evaluation results (per-question values included) of a seed's best settings within the budget, by
    model path (a row's ``model`` is its result's ``meta.model``); empty when its evaluations cannot be read."""
    from perta_hub.recipes.report import gather

    wanted = {str(b["within_budget"]["model"]) for b in summary.get("best", {}).values() if b.get("within_budget")}
    try:
        results = gather(plan, report)
    except (PertaError, OSError, ValueError):
        return {}
    return {str(r["meta"]["model"]): r for r in results if str(r["meta"]["model"]) in wanted}


def seeding(reports: list[Instance]) -> dict[str, list[str]]:
    """What the seeded reports' steps did with the seed, step names in order: ``re-seeded`` (their ``seed`` set),
    ``per seed`` (run once per seed on a re-seeded output, unchanged) and ``once`` (not re-seeded)."""
    from perta_hub.recipes.report import needed

    steps = [d for r in reports for d in [*needed(r), r]]
    return {"re-seeded": list(dict.fromkeys(d.name for d in steps if d.reseeded)),
            "per seed": list(dict.fromkeys(d.name for d in steps if d.seed is not None and not d.reseeded)),
            "once": list(dict.fromkeys(d.name for d in steps if d.seed is None))}
