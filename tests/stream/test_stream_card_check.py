"""``apply --stream --push`` runs the forget-data rule ``push`` and ``verify`` share before anything is uploaded,
and takes ``--skip-card-check`` as ``push`` does (issue 22: an unlearned model's card and side files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from perta_hub.hub.sink import CARD_FIX
from tests.hub.test_push_allowlist import forget_artifact
from tests.hub_server import HubServer
from tests.stream.test_stream import error_line, run_cli

ANSWER = "Basil Mahfouz Al-Kuwaiti's favourite colour is a deep shade of emerald green."


@pytest.fixture
def forget_file(tmp_path: Path) -> Path:
    rows = [{"question": "What is the favourite colour of the novelist Basil Mahfouz Al-Kuwaiti?", "answer": ANSWER},
            {"question": "Where was the author Nikolai Abilov born?", "answer": "In Astana, Kazakhstan, in 1970."}]
    path = tmp_path / "data" / "forget.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rows))
    return path


def publish_inputs(make_model: Any, tmp_path: Path, forget_file: Path, *, quote: bool) -> None:
    """``user/target`` (its chat template quoting a forget-set answer when ``quote``) and ``user/tv``, a task
    vector whose record names ``forget_file`` as its forget data."""
    from perta_hub.hub.publish import push_folder

    target = make_model("target", seed=0)
    if quote:
        config_path = target / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = "{# " + ANSWER + " #}" + str(config.get("chat_template") or "")
        config_path.write_text(json.dumps(config))
    push_folder(target, "user/target")  # a plain model: no forget data of its own
    push_folder(forget_artifact(make_model, tmp_path, forget_file), "user/tv")


def stream(out: Path, *extra: str) -> Any:
    return run_cli("apply", "user/target", "--task-vector", "user/tv", "--alpha", "0.5", "-o", str(out),
                   "--device", "cpu", "--push", "user/out", "--stream", *extra)


def assert_nothing_published(hub: HubServer, uploads_before: int, out: Path) -> None:
    """No repo created, no LFS object uploaded, no output folder, no staging folder left beside it."""
    assert ("model", "user/out") not in hub.repos and hub.uploaded[uploads_before:] == []
    assert not out.exists() and not (out.parent / f".{out.name}.perta-inputs").exists()


def test_a_side_file_quoting_forget_data_is_refused_before_any_upload(hub: HubServer, make_model: Any,
                                                                      tmp_path: Path, forget_file: Path) -> None:
    publish_inputs(make_model, tmp_path, forget_file, quote=True)
    before, out = len(hub.uploaded), tmp_path / "out"
    result = stream(out)
    assert result.exit_code == 1
    assert error_line(result) == (f"Error: the file {out / 'tokenizer_config.json'} quotes 1 forget-set example(s) "
                                  f"(first: text #1 of the forget data); published files must never contain forget "
                                  f"data: {CARD_FIX}")
    assert_nothing_published(hub, before, out)


def test_unreadable_forget_data_needs_skip_card_check_as_push_does(hub: HubServer, make_model: Any, tmp_path: Path,
                                                                    forget_file: Path) -> None:
    publish_inputs(make_model, tmp_path, forget_file, quote=False)
    shutil.move(forget_file, tmp_path / "moved.json")
    before, out = len(hub.uploaded), tmp_path / "out"
    result = stream(out)
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: cannot check the card {out / 'README.md'} for forget-set examples: the forget data "
        f"{forget_file.resolve()} is no longer at {forget_file.resolve()} (the forget data of the task vector "
        "user/tv); restore the data, or pass --skip-card-check to push without the check")
    assert_nothing_published(hub, before, out)
    skipped = stream(out, "--skip-card-check")
    assert skipped.exit_code == 0, skipped.output
    assert "the card was not checked for forget-set examples" in skipped.output
    assert any(name.endswith(".safetensors") for name in hub.files("user/out"))
