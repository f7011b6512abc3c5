"""The kinds of recipe step and the keys each may set, derived from the command line.

A step of kind ``finetune`` takes exactly what ``perta-hub finetune`` takes: its positional arguments (from the
click command: ``model``) and the options of every options class bound to it (``FinetuneOptions``,
``TrainingOptions``, ``PushOptions``; :func:`perta_hub.cli.bind.bind` lists them on the callback), each under its
long flag without the dashes (``--retain-fraction`` -> ``retain-fraction``; a flag with two names, such as tune's
``--alpha/--alphas``, answers to both). Nothing here restates an option's name, type or default.

Besides the commands, two kinds run inside ``perta-hub run`` only: ``tiny-model`` (the tiny demo's tokenizer and
randomly initialised Llama) and ``report`` (``results.json``, ``.md``, ``.png`` from evaluations); their options
are options classes too (:mod:`perta_hub.options.tiny_model`, :mod:`perta_hub.options.report`).

The runner owns some options: the output paths (``-o``, evaluate's ``--plot``; it writes every step into
``OUT/<step>``), ``--overwrite`` and ``--dry-run`` (``perta-hub run --dry-run`` plans the whole recipe). A recipe
that sets one is refused, naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from typing import Any

from perta_hub.options.base import Flag, Options

#: keys of a step that are no option: the kind, the report's name for its rows, and whether it is re-seeded
RECIPE_KEYS = ("command", "label", "seeded")
#: keys that exclude each other (the command refuses both): a step's own value drops the other key's default
EXCLUSIVE = {"apply": (("alpha", "step"),)}
#: fields the runner sets (output paths, overwrite, dry run): why a recipe may not
OWNED = {
    "out_dir": "the runner writes every step to OUT/<step>",
    "output": "the runner writes every step to OUT/<step>",
    "plot": "the runner writes OUT/<step>/tofu.png when the evaluation has a retain model or logs",
    "overwrite": "the runner replaces its own outputs",
    "dry_run": "plan the whole recipe with `perta-hub run --dry-run`",
    "finetuned_dir": "a recipe keeps a model by making it in a finetune step",
}
#: the kinds run inside ``perta-hub run`` (no command of their own)
LOCAL_KINDS = ("tiny-model", "report")
#: commands that are no recipe step
NOT_STEPS = ("demo", "run", "verify")


@dataclass(frozen=True)
class Key:
    """One key a step may set: a positional argument (``flag`` None) or an option."""

    name: str  # the YAML key (canonical)
    field: str  # the argument's or the options field's name
    flag: Flag | None = None
    owner: type[Options] | None = None  # the options class of an option
    many: bool = False  # an argument that takes several values (evaluate's MODELS)
    required: bool = False
    default: Any = None

    @property
    def is_argument(self) -> bool:
        return self.flag is None

    @property
    def boolean(self) -> bool:
        """A flag (``--flag``) or an on/off pair (``--private/--public``): true or false."""
        return self.flag is not None and (self.flag.is_flag or "/" in self.flag.decls[0])

    @property
    def help(self) -> str:
        if self.flag is not None:
            return self.flag.help
        return f"the {self.field.upper()} argument" + (" (one or more)" if self.many else "")


@dataclass(frozen=True)
class StepKind:
    """A step's kind: its command (or a local kind), arguments and options classes."""

    name: str
    arguments: tuple[Key, ...]
    options: tuple[type[Options], ...]

    @property
    def local(self) -> bool:
        """Runs inside ``perta-hub run`` (no command of its own)."""
        return self.name in LOCAL_KINDS

    @property
    def keys(self) -> dict[str, Key]:
        """Every key by its canonical YAML name: arguments first, then options in ``--help`` order (not owned)."""
        return _keys(self)

    @property
    def aliases(self) -> dict[str, str]:
        """Other names of a key (a flag's second long name) -> the canonical one."""
        return _aliases(self)


def yaml_names(flag: Flag) -> list[str]:
    """The YAML names of a flag: its long names without dashes (``--private/--public`` -> ``private``)."""
    names = []
    for decl in flag.decls:
        first = decl.split("/")[0]
        if first.startswith("--"):
            names.append(first[2:])
    return sorted(names, key=lambda n: (-len(n), n))


@cache
def _keys(kind: StepKind) -> dict[str, Key]:
    keys = {k.name: k for k in kind.arguments}
    for cls in kind.options:
        for f, flag in cls.flags():
            if f.name in OWNED:
                continue
            name = yaml_names(flag)[0]
            keys[name] = Key(name, f.name, flag, cls, required=flag.required, default=f.default)
    return keys


@cache
def _aliases(kind: StepKind) -> dict[str, str]:
    out = {}
    for key in kind.keys.values():
        if key.flag is not None:
            for other in yaml_names(key.flag)[1:]:
                out[other] = key.name
    return out


def owned_name(kind: StepKind, name: str) -> str | None:
    """Why the runner owns the key ``name`` of ``kind`` (an owned option's YAML name), or None."""
    for cls in kind.options:
        for f, flag in cls.flags():
            if f.name in OWNED and name in yaml_names(flag):
                return OWNED[f.name]
    return None


@cache
def kinds() -> dict[str, StepKind]:
    """Every step kind by name: the ``perta-hub`` commands (but demo, run, verify), then the local kinds."""
    import click

    from perta_hub.cli import main
    from perta_hub.options.report import ReportOptions
    from perta_hub.options.tiny_model import TinyModelOptions

    out: dict[str, StepKind] = {}
    for name, cmd in main.commands.items():
        if name in NOT_STEPS:
            continue
        arguments = tuple(Key(p.name, p.name, many=p.nargs == -1, required=p.required)
                          for p in cmd.params if isinstance(p, click.Argument) and p.name)
        out[name] = StepKind(name, arguments, tuple(getattr(cmd.callback, "options_classes", ())))
    out["tiny-model"] = StepKind("tiny-model", (), (TinyModelOptions,))
    out["report"] = StepKind("report", (), (ReportOptions,))
    for kind in out.values():
        clash = set(kind.keys) & set(RECIPE_KEYS)
        if clash:
            raise TypeError(f"{kind.name}: the option(s) {sorted(clash)} clash with recipe keys")
    return out


def fields_of(cls: type[Options]) -> list[str]:
    """Every field name of an options class."""
    return [f.name for f in dataclasses.fields(cls)]
