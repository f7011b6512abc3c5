"""Exit codes: one definition (perta_hub.errors.ExitCode), documented once (docs/index.md), the same for every command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import ExitCode, PertaError

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_documented_once_as_defined() -> None:
    text = (DOCS / "index.md").read_text()
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\d+)` \| `(\w+)` \|", section, flags=re.M)
    assert [(int(code), name) for code, name in rows] == [(int(c), c.name) for c in ExitCode]
    assert "docs/index.md#exit-codes" in (DOCS.parent / "README.md").read_text()
    assert click.UsageError.exit_code == ExitCode.USAGE  # click's parsing errors are the usage errors
    assert CliRunner().invoke(main, ["no-such-command"]).exit_code == ExitCode.USAGE
    assert all(cls.exit_code == ExitCode.ERROR for cls in (PertaError, *PertaError.__subclasses__()))


@pytest.mark.parametrize("name", sorted(main.commands))
def test_usage_errors_and_help(name: str) -> None:
    runner = CliRunner()
    assert runner.invoke(main, [name, "--help"]).exit_code == ExitCode.OK
    result = runner.invoke(main, [name, "--no-such-option"])
    assert result.exit_code == ExitCode.USAGE and "No such option" in result.stderr


def _input_errors(tmp: Path, tofu_dir: Path) -> dict[str, list[str]]:
    """For every command, a command line naming an input that does not exist (or cannot be used)."""
    missing, out = str(tmp / "missing"), str(tmp / "out")
    (tmp / "empty").mkdir()
    data = ["--forget", "tofu:forget01"]
    return {
        "apply": [missing, "--task-vector", missing, "--alpha", "1", "-o", out],
        "compare": [missing, missing],
        "compute-weights": [missing, *data, "--retain", "tofu:retain99", "--method", "grad", "-o", out],
        "demo": ["--model", missing, "-o", out, "--quick"],
        "evaluate": [missing, "--data-dir", str(tofu_dir), "--max-examples", "1", "--device", "cpu"],
        "finetune": [missing, "--data", "tofu:forget01", "-o", out],
        "push": [str(tmp / "empty"), "user/x"],
        "run": [str(tmp / "missing.yaml"), "-o", out],
        "task-vector": ["--base", missing, "--finetuned", missing, "-o", out],
        "tune": [missing, "--task-vector", missing, *data, "--retain", "tofu:retain99", "-o", out],
        "unlearn": [missing, "--method", "ga", *data, "-o", out],
        "verify": [missing],
    }


def test_input_errors_exit_1_for_every_command(tmp_path: Path, tofu_dir: Path) -> None:
    cases = _input_errors(tmp_path, tofu_dir)
    assert set(cases) == set(main.commands)  # a new command gets a case here
    for name, args in cases.items():
        result = CliRunner().invoke(main, [name, *args])
        assert result.exit_code == ExitCode.ERROR, (name, result.output)
        if name != "verify":  # verify reports on stdout, one line per check
            errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
            assert len(errors) == 1 and "Traceback" not in result.output, (name, result.output)


def test_interrupt_exits_130(make_model: Callable[..., Path], tofu_dir: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) during a real run: one line, exit 130."""
    model = make_model("m")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PERTA_HUB_PROGRESS_INTERVAL": "0",
           "PYTHONPATH": os.pathsep.join([str(DOCS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "perta_hub", "evaluate", str(model), "--data-dir", str(tofu_dir),
                             "--device", "cpu", "--batch-size", "1", "--max-new-tokens", "4"],  # stopped at once
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            # an xdist worker ignores SIGINT and a child inherits that: give it the default back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    deadline = threading.Timer(300, proc.kill)  # a child that never gets there must not hang the suite
    deadline.start()
    seen = []
    try:
        for line in proc.stderr:  # wait until scoring runs
            seen.append(line)
            if line.startswith("forget Q/A: 1/"):
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
    finally:
        deadline.cancel()
    assert proc.wait(timeout=60) == ExitCode.INTERRUPTED, "".join(seen) + rest
    assert rest.splitlines()[-1].startswith("Interrupted: re-run the same command"), rest
    assert re.search(r"^forget Q/A: stopped at \d+/400 ex after \d+s$", rest, flags=re.M), rest
