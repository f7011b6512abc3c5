"""Running one step: a ``perta-hub`` command, in this process, on the command line its values make.

A command step is its command line (:func:`command_line`: the positional arguments, then every option whose value
differs from its default, then ``-o OUT/<step>``), parsed and run by the command's own click callback, so a step
does exactly what typing that line does; that line is what its outputs record as ``command``. The local kinds
(``tiny-model``, ``report``) are Python functions. Each step returns its outputs (folders or files, in the order a
later step's ``${name}`` lists them).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import RecipeError
from perta_hub.recipes.kinds import StepKind
from perta_hub.recipes.plan import Instance, Plan

#: evaluate's outputs in OUT/<step>/: the results (one model: its TOFU_EVAL.json-style dict; several: a list), the
#: retain model's logs beside them (with --retain-model), the plot (with a forget-quality reference)
EVAL_JSON, EVAL_PLOT = "tofu.json", "tofu.png"


@dataclass
class Done:
    """What a step made: its outputs and facts for the report (``extra``)."""

    outputs: list[Path]
    argv: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def flag_tokens(key: Any, value: Any) -> list[str]:
    """The command-line tokens of one option value (nothing for a default)."""
    flag = key.flag
    decl = "--" + key.name
    if key.boolean:
        if "/" in flag.decls[0]:  # --private/--public
            on, off = flag.decls[0].split("/")
            return [on if value else off]
        return [decl] if value else []
    if flag.multiple:
        return [token for item in value for token in (decl, text(item))]
    if isinstance(value, tuple):
        return [decl, *map(text, value)]
    return [decl, text(value)]


def text(value: Any) -> str:
    """A value as the command line takes it (``1e-05``, ``0.0001``, ``3``)."""
    return repr(value) if isinstance(value, float) else str(value)


def command_line(kind: StepKind, values: dict[str, Any], out: Path) -> list[str]:
    """``[command, arguments..., --option value..., -o OUT]`` of a step's resolved values."""
    argv = [kind.name]
    for key in kind.keys.values():
        value = values.get(key.field)
        if key.is_argument and value is not None:
            argv += list(value) if key.many else [str(value)]
    for key in kind.keys.values():
        value = values.get(key.field)
        if not key.is_argument and value is not None and (value != key.default or key.required):
            argv += flag_tokens(key, value)
    if kind.name == "evaluate":
        argv += ["-o", str(out / EVAL_JSON), "--overwrite"]
        if values.get("retain_logs") or values.get("retain_model"):
            argv += ["--plot", str(out / EVAL_PLOT)]
    elif kind.name != "push":
        argv += ["-o", str(out)]
    return argv


def invoke(argv: list[str], where: str, flags: list[str]) -> None:
    """Parse and run ``perta-hub ARGV`` in this process (``flags``: -q/-v, not recorded); a bad input raises."""
    import click

    from perta_hub.cli import main
    from perta_hub.runtime.invocation import invoked_as

    cmd = main.commands[argv[0]]
    with invoked_as(argv):
        try:
            ctx = cmd.make_context(argv[0], [*argv[1:], *flags])
        except click.ClickException as err:
            raise RecipeError(f"{where}: {' '.join(err.format_message().split())}") from None
        cmd.invoke(ctx)


def run_step(plan: Plan, inst: Instance, flags: list[str], echo: Callable[[str], None]) -> Done:
    """Run one instance (its needed instances have finished); returns what it made."""
    kind = inst.step.kind.name
    values = plan.values(inst)
    out = inst.folder
    if kind == "tiny-model":
        from perta_hub.recipes.tiny import build

        return Done([build(values, out)])
    if kind == "report":
        from perta_hub.recipes.report import write_report

        return Done(write_report(plan, inst, values), extra={})
    if kind == "evaluate":
        out.mkdir(parents=True, exist_ok=True)
    argv = command_line(inst.step.kind, values, out)
    invoke(argv, inst.step.path, flags)
    outputs = outputs_of(kind, values, out)
    if kind == "tune":  # the name of each chosen model's candidate (tv, or its weight map's folder)
        from perta_hub.tuning.command import _labels

        return Done(outputs, argv, {"labels": _labels(candidates(values))})
    return Done(outputs, argv)


def candidates(values: dict[str, Any]) -> list[str | None]:
    """tune's weight-map candidates (None: the plain task vector)."""
    from perta_hub.tuning.command import _candidates

    return _candidates(list(values.get("weights") or ()))


def outputs_of(kind: str, values: dict[str, Any], out: Path) -> list[Path]:
    """The outputs of a finished command step, in the order ``${step}`` lists them."""
    if kind == "apply":
        from perta_hub.merge.spec import alpha_folder, step_folder

        steps, alphas = values.get("steps") or (), values.get("alphas") or ()
        if len(steps or alphas) == 1:
            return [out]
        return [out / step_folder(float(s)) for s in steps] if steps else [out / alpha_folder(float(a)) for a in alphas]
    if kind == "tune":
        from perta_hub.tuning.command import _labels

        labels = _labels(candidates(values))
        return [out] if len(labels) == 1 else [out / label for label in labels]
    if kind == "evaluate":
        return [out / EVAL_JSON]
    if kind == "push":
        return []
    return [out]


def clear(paths: list[Path]) -> None:
    """Remove a step's earlier outputs (its folder under the run's output folder)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
