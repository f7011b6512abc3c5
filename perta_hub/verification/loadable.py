"""What a loader loads is what is verified: the files of an output that transformers, peft or safetensors would
pick up are exactly the files the checks cover, and no file outside the record can change what loads.

transformers 5 (``modeling_utils._get_resolved_checkpoint_files``, local folder or Hub repo alike) loads the file
``config.json``'s ``transformers_weights`` names if set, else the first present of ``model.safetensors``,
``model.safetensors.index.json`` (the shards it names), ``pytorch_model.bin``, ``pytorch_model.bin.index.json``;
an ``adapter_config.json`` beside them makes it (and peft) load ``adapter_model.safetensors`` or ``.bin`` on top
(``integrations/peft.maybe_load_adapters``); ``auto_map`` in a config runs the folder's code with
``trust_remote_code=True``. safetensors loads any ``*.safetensors`` it is given by name. So:

- **weight files**: every weight file at the top of the output is one of its kind's groups in one layout
  (:attr:`perta_hub.records.Record.groups`: ``<group>.safetensors``, or ``<group>.safetensors.index.json`` and
  the shards it names), which integrity hashes and provenance recomputes; anything else (a single file beside an
  index, a shard no index names, a pickle, an adapter, a config redirecting the loader) is a FAIL naming it;
- **unrecorded files**: a file not in the record's ``files`` is a FAIL when it is code, a config with
  ``auto_map``, a weight file, or of no kind known to be harmless; known harmless kinds (cards, tokenizer files
  without ``auto_map``, the generation config...) are listed. Recorded custom code is NOT VERIFIED: what it loads
  cannot be checked.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from perta_hub.records import UNSET
from perta_hub.verification.integrity import LEVEL, UNRECORDED
from perta_hub.verification.result import VerifyResult
from perta_hub.verification.sources import Subject

#: weight files some loader reads (safetensors, torch pickles, GGUF, TF/Flax/ONNX) and the indexes naming them
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".gguf", ".h5", ".msgpack", ".onnx",
                   ".index.json")
#: files that are code (``trust_remote_code`` imports them)
CODE_SUFFIXES = (".py", ".pyc", ".so")
#: the adapter config that makes transformers and peft load an adapter on top of the model
ADAPTER_CONFIG = "adapter_config.json"
#: kinds of files that change nothing a loader loads (JSON ones only without ``auto_map``)
HARMLESS = ("*.md", "LICENSE*", "NOTICE*", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "*.model",
            "*.tiktoken", "chat_template.jinja", "chat_template.json", "*.png", "*.jpg", "*.svg")


def is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES)


def _json(subject: Subject, name: str) -> Any:
    """A JSON file of the output as read (None when absent, not downloaded or not JSON)."""
    try:
        return json.loads((subject.folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _group_files(subject: Subject, group: str, names: set[str]) -> set[str]:
    """The files of one group present: its index and the shards it names, else its single file."""
    index = f"{group}.safetensors.index.json"
    if index in names:
        data = _json(subject, index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        shards = {v for v in weight_map.values() if isinstance(v, str)} if isinstance(weight_map, dict) else set()
        return {index, *shards}
    single = f"{group}.safetensors"
    return {single} if single in names else set()


def layout_files(subject: Subject) -> set[str]:
    """The weight files of the record kind's first layout whose groups are all present (empty: none is)."""
    names = set(subject.present())
    for layout in type(subject.record).groups:
        files = [_group_files(subject, group, names) for group in layout]
        if all(files):
            return set().union(*files)
    return set()


def _why_loaded(name: str, layout: set[str]) -> str:
    """Which loader picks ``name`` up."""
    stem = name.removesuffix(".safetensors")
    if name.endswith(".safetensors") and f"{stem}.safetensors.index.json" in layout:
        first = "AutoModelForCausalLM.from_pretrained loads it" if stem == "model" else "a loader reads it"
        return f"{first} instead of the shards {stem}.safetensors.index.json names, which are what verify checks"
    if name == "model.safetensors.index.json":
        return "AutoModelForCausalLM.from_pretrained loads the shards it names"
    if name.startswith("pytorch_model"):
        return "AutoModelForCausalLM.from_pretrained loads it when no safetensors model is present, or with " \
               "use_safetensors=False"
    if name.startswith("adapter_model"):
        return "transformers and peft load it as an adapter on top of the model"
    if name.endswith(".safetensors") and "-of-" in name:
        return "no index of the output names it, and safetensors loads it by name"
    return "a loader reads it by name, and verify does not check it"


def check_weight_files(result: VerifyResult, subject: Subject) -> None:
    """Every weight file at the top of the output is one of its kind's layout (what integrity hashes and
    provenance recomputes); a loader redirected elsewhere (``transformers_weights``, an adapter) fails."""
    kind = subject.record.kind.replace("_", " ")
    layout = layout_files(subject)
    top = [n for n in subject.present() if "/" not in n]
    problems = [f"{n} is not one of the {kind}'s checked files: {_why_loaded(n, layout)}; remove it, or re-create "
                "the output" for n in top if is_weight_file(n) and n not in layout]
    if ADAPTER_CONFIG in top:
        problems.append(f"{ADAPTER_CONFIG} makes transformers and peft load an adapter on top of the model, and "
                        "verify does not check it")
    config = _json(subject, "config.json")
    redirect = config.get("transformers_weights") if isinstance(config, dict) else None
    entries = {f"{g}.safetensors{end}" for layout_ in type(subject.record).groups for g in layout_
               for end in ("", ".index.json")} & layout  # what from_pretrained may be pointed at: a whole group
    if redirect is not None and redirect not in entries:
        problems.append(f"config.json sets transformers_weights = {redirect!r}: from_pretrained loads that instead "
                        "of the checked weights")
    if not layout:
        groups = " or ".join(" + ".join(g) for g in type(subject.record).groups)
        problems.insert(0, f"the {kind}'s weights ({groups}: <group>.safetensors or an index and its shards) are "
                           "not present")
    if problems:
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        result.add(LEVEL, "weight files", "fail", problems[0] + more)
        return
    indexes = sorted(n for n in layout if n.endswith(".index.json"))
    what = (f"{', '.join(indexes)} and the {len(layout) - len(indexes)} shard(s) named" if indexes
            else ", ".join(sorted(layout)))
    result.add(LEVEL, "weight files", "pass", f"the weight files a loader picks up are the {kind}'s own, all "
               f"checked ({what})")


def _custom_code(subject: Subject, name: str) -> str | None:
    """Why ``name`` is code a loader may run (a code file, or a JSON config with ``auto_map``), else None."""
    if name.endswith(CODE_SUFFIXES):
        return "code"
    if name.endswith(".json"):
        data = _json(subject, name)
        if isinstance(data, dict) and "auto_map" in data:
            return "a config with auto_map (custom code run with trust_remote_code=True)"
    return None


def check_unrecorded_files(result: VerifyResult, subject: Subject) -> None:
    """Files not in the record's ``files``: code, ``auto_map`` configs, weight files and files of unknown kinds
    fail; harmless kinds are listed. Recorded custom code is a line of its own (NOT VERIFIED)."""
    recorded = subject.record.files
    if recorded is UNSET:  # "file hashes" already says the files cannot be checked
        return
    present = subject.present()
    problems: list[str] = []
    harmless: list[str] = []
    for name in present:
        if name in UNRECORDED or name in recorded:
            continue
        code = _custom_code(subject, name)
        base = Path(name).name
        if code:
            problems.append(f"{name} is {code} that is not in the record's files")
        elif is_weight_file(name):
            problems.append(f"{name} is present but not in the record's files")
        elif any(fnmatch.fnmatchcase(base, pattern) for pattern in HARMLESS):
            harmless.append(name)
        else:
            problems.append(f"{name} is not in the record's files and is not of a kind known to be harmless "
                            "(card, tokenizer, generation config)")
    code = [n for n in present if n in recorded and _custom_code(subject, n)]
    if code:
        result.add(LEVEL, "custom code", "unverified", f"{code[0]} is custom code a loader runs with "
                   f"trust_remote_code=True ({len(code)} file(s)); verify cannot check what it loads")
    if problems:
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        result.add(LEVEL, "unrecorded files", "fail", problems[0] + more)
    elif harmless:
        result.add(LEVEL, "unrecorded files", "pass", f"{len(harmless)} file(s) not recorded, all of harmless kinds: "
                   f"{', '.join(harmless)}")
    else:
        result.add(LEVEL, "unrecorded files", "pass", "every file present is recorded (but the card and the record)")
