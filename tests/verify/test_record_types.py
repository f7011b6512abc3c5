"""A ``perta_config.json`` of the wrong JSON type (a list, a string, a number instead of an object) or with a field
of the wrong type is one line naming the file, from every command that reads records (push, verify, apply,
evaluate, tune: all through :func:`perta_hub.records.read_record`), and nothing is written or published."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import ExitCode
from perta_hub.records import CONFIG_NAME
from tests.helpers import tree_digest
from tests.hub_server import HubServer

REDO = "re-create the output or fix the file"
BAD_RECORDS = {
    "a list": ("[1, 2]", " is not a JSON object; re-create the output"),
    "a string": ('"task_vector"', " is not a JSON object; re-create the output"),
    "a number": ("3", " is not a JSON object; re-create the output"),
    "a field of the wrong type": ('{"kind": "task_vector", "dtype": 3}',
                                  f": key 'dtype' must be one of 'float32', 'bfloat16', 'float16', got an integer (3); "
                                  f"{REDO}"),
    "files of the wrong type": ('{"kind": "task_vector", "dtype": "float32", "files": ["a"]}',
                                f": key 'files' must be an object, got a list ([\"a\"]); {REDO}"),
}


def commands(tofu_dir: Path, folder: Path, target: Path, out: Path) -> dict[str, list[str]]:
    """Each command that reads the record of ``folder`` (a model for push, verify and evaluate; a task vector
    for apply and tune)."""
    data = ["--forget", "tofu:forget01", "--retain", "tofu:retain99"]
    return {
        "push": ["push", str(folder), "user/m"],
        "verify": ["verify", str(folder)],
        "apply": ["apply", str(target), "--task-vector", str(folder), "--alpha", "1", "-o", str(out),
                  "--device", "cpu"],
        "evaluate": ["evaluate", str(folder), "--forget-split", "forget01", "--data-dir", str(tofu_dir),
                     "--max-examples", "1", "--device", "cpu"],
        "tune": ["tune", str(target), "--task-vector", str(folder), *data, "-o", str(out), "--device", "cpu"],
    }


@pytest.mark.parametrize("command", ["push", "verify", "apply", "evaluate", "tune"])
@pytest.mark.parametrize("case", BAD_RECORDS)
def test_a_record_of_the_wrong_type_is_one_line(case: str, command: str, merged: dict[str, Path], tmp_path: Path,
                                                tofu_dir: Path, hub: HubServer) -> None:
    text, message = BAD_RECORDS[case]
    kind = "tv" if command in ("apply", "tune") else "model"
    folder = Path(shutil.copytree(merged[kind], tmp_path / kind))
    (folder / CONFIG_NAME).write_text(text)
    out = tmp_path / "out"
    before = tree_digest(folder)
    result = CliRunner().invoke(main, commands(tofu_dir, folder, merged["target"], out)[command])
    path = folder / CONFIG_NAME
    assert isinstance(result.exception, SystemExit) and result.exit_code == ExitCode.ERROR, result.output
    if command == "verify":
        assert [line for line in result.stdout.splitlines() if line.startswith("FAIL")] == [
            f"FAIL         integrity  record: {path}{message}"]
    else:
        assert result.stderr.splitlines()[-1] == f"Error: {path}{message}", result.output
        assert sum(line.startswith("Error: ") for line in result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output
    assert not out.exists() and tree_digest(folder) == before
    assert not hub.repos and not hub.uploaded


def test_the_api_raises_the_same_line(tmp_path: Path) -> None:
    from perta_hub.errors import CheckpointError
    from perta_hub.records import read_record

    (tmp_path / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(CheckpointError) as err:
        read_record(tmp_path)
    assert str(err.value) == f"{tmp_path / CONFIG_NAME} is not a JSON object; re-create the output"
