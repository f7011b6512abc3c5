"""Typed records: the one definition of ``perta_config.json`` for each kind of output.

Every output folder perta-hub writes holds a ``perta_config.json``; its keys are the fields of one record
class below (one per kind: task vector, weight map, unlearned model, fine-tuned model), frozen dataclasses in
the manner of peft's ``PeftConfigMixin`` (one base class serialises them all). Writers build a record with
:meth:`Record.from_dict` and write :meth:`Record.to_json`; readers (``apply``, cards, ``push``, ``verify``,
``evaluate``) call :func:`read_record` (or :func:`record_of`), never ``json.loads``. Every key's type is
checked (no string for a number, no list for a dict, no unknown key, no unknown kind) and a violation is one
line naming the key. Fields a writer did not set are left out of the file, so the JSON holds exactly what was
recorded, in the order of the fields here.

A record class is also the one definition of its kind: its class attributes (``kind``, ``required``,
``groups``, ``private``, ``forget_data_keys``, ``inputs``, ``side_inputs``, ``forget_inputs``, ``recompute``,
``card_tag``, ``card_title``, ``card_summary``, ``apply_option``; see :class:`Record`) are what the artifact reader, the push
allow-list and visibility, the card check, the cards and ``verify`` consult. A class decorated with
:func:`record_class` that sets ``kind`` is registered in :data:`RECORDS`, so a new kind is one class here
(plus the code that writes it).

Plain dataclasses rather than pydantic: the records are read on the merger's start-up path, where
pydantic's import and model construction cost about 0.2 s.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from perta_hub._version import __version__
from perta_hub.errors import CheckpointError

CONFIG_NAME = "perta_config.json"

Json = dict[str, Any]

#: the record class of each ``kind``, filled by :func:`record_class` in the order the classes are defined
RECORDS: dict[str, type[Record]] = {}


class _Unset:
    """The default of a field the writer did not set (left out of the JSON)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _opt() -> Any:
    return field(default=UNSET)


def record_class(cls: type) -> Any:
    """``@dataclass(frozen=True)`` where every field declared without a value defaults to :data:`UNSET` (not
    set: left out of the JSON); a class that sets ``kind`` is registered in :data:`RECORDS` (the keys it needs,
    ``required``, are checked by :func:`parse_record`)."""
    for name, hint in cls.__dict__.get("__annotations__", {}).items():
        if name not in cls.__dict__ and not str(hint).startswith("ClassVar"):
            setattr(cls, name, field(default=UNSET))
    cls = dataclass(frozen=True)(cls)
    kind = cls.__dict__.get("kind")
    if isinstance(kind, str):
        if kind in RECORDS:
            raise TypeError(f"two record classes declare the kind {kind!r}")
        RECORDS[kind] = cls
    return cls


class _Invalid(Exception):
    """A value that does not fit its field (message without the key)."""


@dataclass(frozen=True)
class _Typed:
    """A frozen dataclass whose values are checked against the annotations by :meth:`from_dict`."""

    @classmethod
    def from_dict(cls, data: Json) -> Any:
        """Build from a JSON object; raises ``_Invalid`` (via :func:`parse_record`) naming the key."""
        if not isinstance(data, dict):
            raise _Invalid(f"must be an object, got {_shown(data)}")
        hints = _hints(cls)
        known = {f.name: f for f in fields(cls) if f.init}
        values = {}
        for key, value in data.items():
            if key not in known:
                raise _KeyError(key, "is not a known key")
            try:
                values[key] = _check(value, hints[key])
            except _KeyError as err:
                raise _KeyError(f"{key}.{err.key}", err.reason) from None
            except _Invalid as err:
                raise _KeyError(key, str(err)) from None
        for name, f in known.items():
            if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _KeyError(name, "is missing")
        return cls(**values)

    def to_plain(self) -> Json:
        """The set fields in order (nested records as dicts)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is UNSET or not f.init:
                continue
            out[f.name] = value.to_plain() if isinstance(value, _Typed) else value
        return out


class _KeyError(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key, self.reason = key, reason


_HINTS: dict[type, dict[str, Any]] = {}
_FIELDS: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    if cls not in _FIELDS:
        _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    return _FIELDS[cls]


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _check(value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint`` (str, int, float, bool, None, Json, Literal, a record, or a union)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        for option in options:
            try:
                return _check(value, option)
            except _Invalid:
                continue
        raise _Invalid(f"must be {' or '.join(_name(o) for o in options)}, got {_shown(value)}")
    if origin is Literal:
        if value in typing.get_args(hint) and not isinstance(value, bool):
            return value
        raise _Invalid(f"must be one of {', '.join(map(repr, typing.get_args(hint)))}, got {_shown(value)}")
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
    elif origin is dict:
        if isinstance(value, dict):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if isinstance(value, int) else value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type) and issubclass(hint, _Typed):
        return hint.from_dict(value)
    elif isinstance(value, hint):
        return value
    raise _Invalid(f"must be {_name(hint)}, got {_shown(value)}")


def _name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is dict:
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, "an object")


def _shown(value: Any) -> str:
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{kind} ({json.dumps(value, default=str)[:60]})"


@dataclass(frozen=True)
class Source(_Typed):
    """Where an input came from: what the user passed, the Hub repo (None for a local path), the revision (Hub
    commit sha, or ``sha256:<hex>`` of a local folder's files) and, for a local input, its resolved absolute
    ``path`` (where ``verify`` looks first, from any directory; older records lack it)."""

    source: str
    repo_id: str | None = _opt()
    revision: str = _opt()
    temporary: bool = _opt()
    path: str = _opt()


@dataclass(frozen=True)
class RecipeRef(_Typed):
    """The recipe step that wrote an output (``perta-hub run``): the recipe's sha256 (of its resolved form,
    ``recipe.resolved.yaml``), the step's name, its seed when the recipe runs several, and where the resolved
    recipe was saved."""

    sha256: str
    step: str
    seed: int = _opt()
    file: str = _opt()


@dataclass(frozen=True)
class ArtifactRef(_Typed):
    """An artifact an unlearned model was made from (task vector); ``path`` as :class:`Source`'s."""

    source: str
    revision: str
    repo_id: str | None = _opt()
    path: str = _opt()


@dataclass(frozen=True)
class WeightsRef(_Typed):
    """The weight map an unlearned model was made from, and the combination used (``w`` formula); ``path`` as
    :class:`Source`'s."""

    source: str
    revision: str
    method: str
    repo_id: str | None = _opt()
    p: float = _opt()
    lam: float = _opt()
    eps: float = _opt()
    unrestricted: Literal["w=0", "w=1"] = _opt()
    path: str = _opt()


@record_class
class Record(_Typed):
    """Fields every record holds: version, kind and command first in the file, ``run_id`` and ``hub`` last.

    The class attributes (``ClassVar``, not keys of the file) define the kind; each subclass sets those that
    differ from the defaults here (a plain transformers checkpoint, public, made by training).
    """

    #: the value of ``kind`` in the file
    kind: ClassVar[str]
    #: keys a record of this kind must hold to be used (older or hand-made files may lack the others)
    required: ClassVar[tuple[str, ...]] = ()
    #: the safetensors groups a folder of this kind holds, one tuple per layout it may take; a group is
    #: ``<group>-0000i-of-0000N.safetensors`` + ``<group>.safetensors.index.json`` (or ``<group>.safetensors``).
    #: Artifacts are written and read by group, and ``push`` uploads no other weight files (:meth:`weight_prefixes`)
    groups: ClassVar[tuple[tuple[str, ...], ...]] = (("model",),)
    #: private on the Hub unless ``push --public``, and expected private by ``verify --privacy``: it is derived
    #: from the forget data and can reveal it (a record may narrow this, see :meth:`forget_derived`)
    private: ClassVar[bool] = False
    #: the keys describing the forget data it is derived from: ``push`` and ``verify --privacy`` read that data
    #: back and refuse a card that quotes it
    forget_data_keys: ClassVar[tuple[str, ...]] = ()
    #: the keys naming the models and artifacts it was made from (``source``, ``repo_id``, ``revision``), in the
    #: order its card lists them: ``verify`` checks each is pinned (commit sha or content hash) and named by the card
    inputs: ClassVar[tuple[str, ...]] = ()
    #: further inputs recorded as plain objects (``source``, ``revision``): pinned, but not listed on the card
    side_inputs: ClassVar[tuple[str, ...]] = ()
    #: the inputs derived from the forget data: ``verify --privacy`` checks their repos are private, and scans the
    #: card against their forget data and that of their own forget-derived inputs
    forget_inputs: ClassVar[tuple[str, ...]] = ()
    #: what ``verify --recompute`` does with it: ``merge`` (every tensor recomputed from target, task vector and
    #: weight map), ``difference`` (recomputed from base and fine-tuned model), ``importances`` (``w`` recombined
    #: from the stored importances), ``training`` (made by training: not re-run)
    recompute: ClassVar[Literal["merge", "difference", "importances", "training"]] = "training"
    #: the tag its card carries after ``perta`` and ``machine-unlearning``, and the card's title (None: the card
    #: is made by the kind's own module, e.g. :mod:`perta_hub.cards.finetuned`)
    card_tag: ClassVar[str | None] = None
    card_title: ClassVar[str | None] = None
    #: what an artifact card says the folder holds (``{key}``: the record's value of ``key``)
    card_summary: ClassVar[str | None] = None
    #: the ``apply`` option that takes a folder of this kind (None: not an input of ``apply``)
    apply_option: ClassVar[str | None] = None

    perta_hub_version: str = __version__
    command: str | None
    #: the recipe step that wrote it (``perta-hub run``; unset otherwise), set when the folder is finished
    recipe: RecipeRef
    #: sha256 of every file the run wrote (shards, indexes, copied side files), by file name; written after the
    #: kind's fields (``perta-hub verify`` checks the files against it)
    files: Json
    #: the run's id (a hash of the inputs' identities and every parameter); written after the kind's fields
    run_id: str
    #: where the folder was published (``push``); written last
    hub: Json

    @classmethod
    def build(cls, data: Json) -> Any:
        """A record of this kind from its fields, checked as :func:`parse_record` checks a file."""
        return parse_record({"kind": cls.kind, **data}, f"the {cls.kind} record")

    def to_dict(self) -> Json:
        """The JSON object: version, kind, then the set fields in order."""
        data = self.to_plain()
        data.pop("perta_hub_version", None)
        tail = {key: data.pop(key) for key in ("files", "run_id", "hub") if key in data}
        return {"perta_hub_version": self.perta_hub_version, "kind": self.kind, **data, **tail}

    def to_json(self) -> str:
        """The text of ``perta_config.json`` (2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str) + "\n"

    def with_hub(self, hub: Json) -> Record:
        """A copy that records where the folder was published."""
        return dataclasses.replace(self, hub=hub)  # type: ignore[call-arg]

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``; ``default`` when it is not set, or not a key of this kind."""
        value = getattr(self, key) if key in _field_names(type(self)) else UNSET
        return default if value is UNSET else value

    def forget_derived(self) -> bool:
        """Whether this output is derived from the forget data, so private by default on push (the kind's
        :attr:`private`)."""
        return self.private

    @classmethod
    def weight_prefixes(cls) -> tuple[str, ...]:
        """Every group name of every layout: the weight files (``<prefix>*.safetensors``, indexes) of the kind."""
        return tuple(dict.fromkeys(group for layout in cls.groups for group in layout))


@record_class
class TaskVectorRecord(Record):
    """``tau = finetuned - base`` (or a LoRA adapter's ``scaling * B @ A``), stored in ``dtype``."""

    kind: ClassVar[str] = "task_vector"
    required = ("dtype",)
    groups = (("task_vector",), ("lora_A", "lora_B"))  # dense, or LoRA factors (merge/low_rank.py)
    private = True
    forget_data_keys = ("forget_data",)
    inputs = ("base", "finetuned")
    side_inputs = ("adapter",)  # the LoRA adapter a task vector was computed from (merge/lora_delta.py)
    forget_inputs = ("finetuned",)
    recompute = "difference"
    card_tag, card_title = "task-vector", "PerTA task vector"
    card_summary = ("the difference `tau = theta_finetuned - theta_anchor`, one tensor per model parameter (stored "
                    "as {dtype}).")
    apply_option = "--task-vector"

    base: Source
    finetuned: Source
    adapter: Json
    dtype: Literal["float32", "bfloat16", "float16"]
    num_parameters: int
    base_config: Json
    lora_rank: int | None
    lora: Json | None
    method: Literal["full", "lora"]
    forget_data: Json
    training: Json
    training_results: Json
    finetuned_kept: bool
    finetune_run_id: str


@record_class
class WeightMapRecord(Record):
    """Importances ``I_f`` and ``I_r`` and the combination ``w = I_f^p / (I_f^p + lam I_r^p + eps)``."""

    kind: ClassVar[str] = "weight_map"
    groups = (("importance_forget", "importance_retain"),)
    private = True
    forget_data_keys = ("forget_data",)
    inputs = ("model",)
    recompute = "importances"
    card_tag, card_title = "weight-map", "PerTA weight map"
    card_summary = ("per-parameter importances for forgetting (`importance_forget`, I_f) and retention "
                    "(`importance_retain`, I_r) computed with the `{method}` method; `apply` combines them into "
                    "`w = I_f^p / (I_f^p + lam * I_r^p + eps)`.")
    apply_option = "--weights"

    model: Source
    model_config: Json
    gradients_at: Literal["target", "anchor"]
    method: str
    p: float
    lam: float
    eps: float
    forget_data: Json
    retain_data: Json
    max_length: int
    params: str | None
    unrestricted: Literal["w=0", "w=1"]
    num_tensors: int
    num_parameters: int
    dtype: str
    underflow: Json
    compute: Json
    selectivity: Json  # how w spreads at the map's p, lam, eps (:mod:`perta_hub.importance.summary`)


@record_class
class ModelRecord(Record):
    """An unlearned model: ``theta = target - alpha * (w ⊙ tau)``."""

    kind: ClassVar[str] = "model"
    required = ("alpha", "target", "task_vector")
    inputs = ("target", "task_vector", "weights")
    forget_inputs = ("task_vector", "weights")
    recompute = "merge"
    card_tag, card_title = "unlearned-model", "Unlearned model (PerTA)"

    alpha: float
    step: float  # ``apply --step``: the step norm asked for (alpha was set from it)
    #: ``||alpha w ⊙ tau|| / ||tau||`` over every tensor of the task vector (``w = 1`` for plain task-vector
    #: negation), summed while merging; dimensionless, 6 significant digits
    step_norm: float
    method: str
    target: Source
    task_vector: ArtifactRef
    weights: WeightsRef | None
    device: str
    tune: Json  # ``perta-hub tune``: the alpha search (alphas tried, scores, rule, budget, chosen)
    mode: Literal["stream"]  # ``apply --stream``: merged shard by shard from the Hub to the Hub (unset: local)


@record_class
class FinetunedModelRecord(Record):
    """A model fine-tuned on question/answer data (the privacy-tuned model a task vector is made from)."""

    kind: ClassVar[str] = "finetuned_model"
    required = ("base",)
    private = True  # the model fine-tuned on the forget data (``data_role``, see :meth:`forget_derived`)
    forget_data_keys = ("data",)
    inputs = ("base",)

    #: ``forget``: fine-tuned on the forget data by ``task-vector MODEL --forget`` (private by default on push);
    #: ``training``: any other fine-tune (a target, a retain model); unset in older records (treated as forget)
    data_role: Literal["forget", "training"]
    base: Source
    base_config: Json
    num_parameters: int
    data: Json
    training: Json
    lora_rank: int | None
    lora: Json | None
    results: Json
    library: Json

    def forget_derived(self) -> bool:
        """Fine-tuned on the forget data (``data_role`` ``forget``, or unset in an older record); a target or
        retain model ``finetune`` trained (``data_role`` ``training``) is not."""
        return self.data_role in ("forget", UNSET)


@record_class
class UnlearnedModelRecord(Record):
    """A model unlearned by gradient training (``perta-hub unlearn``: GradAscent, GradDiff or NPO)."""

    kind: ClassVar[str] = "unlearned_model"
    required = ("method", "target")
    forget_data_keys = ("forget_data",)  # trained on the forget data: push and verify scan its files for it
    inputs = ("target",)

    method: Literal["ga", "gd", "npo"]
    target: Source
    target_config: Json
    num_parameters: int
    dtype: str
    hyperparameters: Json
    forget_data: Json
    retain_data: Json | None
    training: Json
    results: Json
    library: Json


def parse_record(data: Any, where: str = CONFIG_NAME) -> Record:
    """Validate a ``perta_config.json`` object against the record of its ``kind``.

    Raises:
        CheckpointError: not an object, unknown kind, a missing key, a key of the wrong type, an unknown key
            (one line naming the key).
    """
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} is not a JSON object; re-create the output")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in RECORDS:
        raise CheckpointError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(RECORDS)}); "
                              "it was not written by perta-hub, or by a newer version")
    try:
        record = RECORDS[kind].from_dict({k: v for k, v in data.items() if k != "kind"})
        for key in record.required:
            if getattr(record, key) is UNSET:
                raise _KeyError(key, "is missing")
    except _KeyError as err:
        raise CheckpointError(f"{where}: key {err.key!r} {err.reason}; re-create the output or fix the file") from None
    return record


def read_record(folder: str | Path) -> Record:
    """The record of a perta-hub output folder.

    Raises:
        CheckpointError: no ``perta_config.json``, invalid JSON, or a record that does not validate.
    """
    path = Path(folder) / CONFIG_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CheckpointError(f"{folder} is not a perta-hub output (no {CONFIG_NAME})") from None
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON (not UTF-8 at byte {err.start}); re-download or re-create "
                              "it") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); re-download or re-create it") from None
    return parse_record(data, str(path))


def record_of(folder: str | Path) -> Record | None:
    """The record of a folder, or None when it holds no ``perta_config.json`` (a plain model folder).

    Raises:
        CheckpointError: a ``perta_config.json`` that is not valid JSON or does not validate (one line).
    """
    if not (Path(folder) / CONFIG_NAME).is_file():
        return None
    return read_record(folder)
