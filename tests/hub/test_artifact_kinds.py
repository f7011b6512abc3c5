"""An artifact kind is one definition: its record class in ``perta_hub/records.py``.

Everything else about a kind (the groups an artifact holds, what ``push`` uploads and whether the repo is private,
the forget data its card is checked against, its card's tag, title and usage, how ``verify`` treats it) is read
from the class, so a kind defined here, in the test, is written, verified and pushed like the built-in ones. And
every read of ``perta_config.json`` goes through the records: a malformed record is the records' one line from
``push``, ``verify`` and ``evaluate``.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.records import RECORDS, Json, Record, Source, read_record, record_class
from tests.hub_server import HubServer

PACKAGE = Path(__file__).resolve().parents[2] / "perta_hub"
ROWS = [{"question": "Which colour does the novelist Basil Mahfouz Al-Kuwaiti like best of all?",
         "answer": "Basil Mahfouz Al-Kuwaiti likes a deep shade of emerald green best of all."}]


@pytest.fixture
def new_kind() -> Iterator[type[Record]]:
    """A kind that exists only in this test: one record class, registered by ``record_class``, removed after."""

    @record_class
    class ActivationMapRecord(Record):
        """Mean activations of a model on the forget and retain data."""

        kind: ClassVar[str] = "activation_map"
        required = ("model",)
        groups = (("activation_forget", "activation_retain"),)
        private = True
        forget_data_keys = ("forget_data",)
        inputs = ("model",)
        card_tag, card_title = "activation-map", "PerTA activation map"
        card_summary = "mean activations on the forget and retain data, computed with the `{method}` method."
        apply_option = "--activations"

        model: Source
        method: str
        forget_data: Json
        num_parameters: int

    yield ActivationMapRecord
    del RECORDS["activation_map"]


def write_new_kind(out: Path, tmp_path: Path) -> Path:
    """An ``activation_map`` folder written by the generic artifact writer, its forget data in ``tmp_path``."""
    import torch

    from perta_hub.jobs.artifact import save_artifact

    data = tmp_path / "forget.json"
    data.write_text(json.dumps(ROWS))
    forget = {"spec": str(data), "source": str(data), "question_field": "question", "answer_field": "answer",
              "files": [{"path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}]}
    groups = {g: {"layer.weight": torch.full((2, 3), v), "layer.bias": torch.full((2,), v)}
              for g, v in (("activation_forget", 1.0), ("activation_retain", 2.0))}
    provenance = {"command": "perta-hub activations model -o am", "method": "mean",
                  "model": {"source": "model", "repo_id": None, "revision": "sha256:" + "0" * 64},
                  "forget_data": forget, "num_parameters": 8}
    return save_artifact(out, "activation_map", groups, provenance, progress=False)


def test_a_new_kind_is_one_record_class(new_kind: type[Record], hub: HubServer, tmp_path: Path) -> None:
    from perta_hub.hub.allowlist import plan_upload
    from perta_hub.hub.card_check import check_card_before_push, forget_texts
    from perta_hub.hub.publish import public_artifact_warning, publish, resolve_private, set_published
    from perta_hub.verification import verify

    folder = write_new_kind(tmp_path / "am", tmp_path)
    record = read_record(folder)
    assert isinstance(record, new_kind) and record.kind == "activation_map"
    shards = sorted(p.name for p in folder.glob("*.safetensors*"))
    assert [n for n in shards if n.endswith(".index.json")] == ["activation_forget.safetensors.index.json",
                                                                "activation_retain.safetensors.index.json"]

    # the card: tag, title, what it holds, the privacy note (private kind), its inputs, the apply option
    card = (folder / "README.md").read_text()
    assert "- activation-map" in card and "\n# PerTA activation map\n" in card
    assert "computed with the `mean` method." in card and "**Privacy note.**" in card
    assert "- model: `model` at `sha256:" in card and "--activations THIS_REPO" in card
    assert "perta-hub apply MODEL --task-vector TASK_VECTOR --activations me/am@abc" in set_published(
        card, "me/am", "main", "abc", "activation_map")

    # push: only the kind's groups among the weight files, private by default, the card checked against its data
    (folder / "model.safetensors").write_bytes((folder / shards[0]).read_bytes())
    plan = plan_upload(folder, "activation_map")
    assert "model.safetensors" in plan.left_out and set(shards) <= set(plan.upload)
    assert resolve_private(folder, None) is True and resolve_private(folder, False) is False
    assert "this activation map is derived from the forget data" in str(public_artifact_warning(folder, "u/am", False))
    assert forget_texts(record).texts == [ROWS[0]["question"], ROWS[0]["answer"]]
    (folder / "README.md").write_text(card + "\n" + ROWS[0]["answer"] + "\n")
    with pytest.raises(Exception, match=r"quotes 1 forget-set example"):
        check_card_before_push(folder, record)
    (folder / "README.md").write_text(card)
    result = publish(folder, "user/am")
    assert hub.repo("user/am").private is True and result.left_out == ("model.safetensors",)
    (folder / "model.safetensors").unlink()

    # verify: record, files, indexes, card (its input), pinned; the card scanned against its forget data
    report = verify(folder, privacy_level=True, recompute=True)
    checks = {c.name: c.status for c in report.checks}
    assert checks == {"record": "pass", "file hashes": "pass", "weight files": "pass", "unrecorded files": "pass",
                      "indexes": "pass", "card": "pass", "inputs pinned": "pass", "recompute": "unverified",
                      "private inputs": "skipped", "card scan": "pass"}, report.checks


def test_every_declaration_names_the_records_own_keys() -> None:
    """What a kind declares refers to its own fields (a typo would silently disable a check)."""
    assert list(RECORDS) == ["task_vector", "weight_map", "model", "finetuned_model", "unlearned_model"]
    for kind, cls in RECORDS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        declared = {*cls.required, *cls.forget_data_keys, *cls.inputs, *cls.side_inputs, *cls.forget_inputs}
        assert declared <= names, (kind, declared - names)
        assert set(cls.forget_inputs) <= set(cls.inputs) and cls.groups and all(cls.groups)
        assert cls.recompute in ("merge", "difference", "importances", "training")
        if cls.apply_option:  # an artifact: its card is the artifact card
            assert cls.card_tag and cls.card_title and cls.card_summary, kind
    assert RECORDS["task_vector"].weight_prefixes() == ("task_vector", "lora_A", "lora_B")
    assert [k for k, c in RECORDS.items() if c.private] == ["task_vector", "weight_map", "finetuned_model"]


def test_perta_config_json_is_named_and_parsed_only_by_records() -> None:
    """``CONFIG_NAME`` is defined once, and no module but records.py spells the file name or reads the file."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "records.py" and path.parent == PACKAGE:
            continue
        text = path.read_text()
        tree = ast.parse(text)
        spelled = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "perta_config.json"]
        assigned = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "CONFIG_NAME" for t in n.targets)]
        read = [m.group(0) for m in re.finditer(r"CONFIG_NAME\)?\.(read_text|read_bytes|open)\(", text)]
        assert not (spelled or assigned or read), f"{path.relative_to(PACKAGE)}: {spelled or assigned or read}"


BAD_RECORDS = {
    "a JSON list": ("[1, 2]", "perta_config.json is not a JSON object; re-create the output"),
    "a missing key": ('{"kind": "model", "alpha": 1.0, "method": "tv"}', "perta_config.json: key 'target' is missing"),
    "an unknown kind": ('{"kind": "mystery"}', "perta_config.json: unknown kind 'mystery'"),
}


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_a_malformed_record_is_the_records_one_line(case: str, make_model: Any, tofu_dir: Path) -> None:
    """push, verify and evaluate read ``perta_config.json`` through the records: one line, no traceback."""
    text, message = BAD_RECORDS[case]
    model = make_model("model")
    (model / "perta_config.json").write_text(text)
    runner = CliRunner()
    for args in (["push", str(model), "user/m"], ["verify", str(model)],
                 ["evaluate", str(model), "--forget-split", "forget01", "--data-dir", str(tofu_dir),
                  "--max-examples", "1", "--device", "cpu"]):
        result = runner.invoke(main, args)
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), (args[0], result.output)
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if message in line]
        assert len(lines) == 1, (args[0], result.output)
        assert args[0] == "verify" or lines[0].startswith("Error: "), lines
