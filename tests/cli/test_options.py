"""Options as data: one default per option (CLI --help and API signatures agree), -q/-v, progress only on a
terminal, the recorded command line, process-wide settings only from the CLI."""

from __future__ import annotations

import dataclasses
import fcntl
import inspect
import json
import os
import pty
import shlex
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import perta_hub
from perta_hub.cli import main
from perta_hub.errors import ExitCode, InputError
from perta_hub.merge.task_vector import task_vector
from perta_hub.options.apply import APPLY, ApplyOptions
from perta_hub.options.base import flags_of
from perta_hub.options.common import OutputOptions
from perta_hub.options.compare import COMPARE, CompareOptions
from perta_hub.options.compute_weights import COMPUTE_WEIGHTS, ComputeWeightsOptions
from perta_hub.options.demo import DEMO, DemoOptions
from perta_hub.options.evaluate import EVALUATE, EvaluateOptions
from perta_hub.options.finetune import FINETUNE, FinetuneOptions
from perta_hub.options.push import PUBLISH, PublishOptions, PushOptions
from perta_hub.options.task_vector import TASK_VECTOR, TaskVectorOptions
from perta_hub.options.training import TrainingOptions, UnlearnTrainingOptions
from perta_hub.options.unlearn import UNLEARN, UnlearnOptions

#: command -> the options classes whose flags it has
COMMANDS: dict[str, list[type]] = {
    "apply": [ApplyOptions, PushOptions],
    "task-vector": [TaskVectorOptions, TrainingOptions, PushOptions],
    "finetune": [FinetuneOptions, TrainingOptions, PushOptions],
    "compute-weights": [ComputeWeightsOptions, PushOptions],
    "evaluate": [EvaluateOptions],
    "compare": [CompareOptions],
    "push": [PublishOptions],
    "demo": [DemoOptions],
}
ROOT = Path(__file__).resolve().parents[2]


def _help(command: str) -> str:
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=2000)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_each_flag_and_the_options_objects_defaults(command: str) -> None:
    text = _help(command)
    for cls in [*COMMANDS[command], OutputOptions]:
        for field, flag in flags_of(cls):
            assert flag.decls[-1].split("/")[0] in text, (command, flag.decls)
            if flag.show_default:
                assert f"[default: {field.default}" in text, (command, field.name, field.default)
            if flag.required:
                assert f"{flag.help.split()[0]}" in text


@pytest.mark.parametrize(("func", "options"), [
    ("perta_hub.merge.apply:apply", APPLY),
    ("perta_hub.merge.task_vector:task_vector", TASK_VECTOR),
    ("perta_hub.importance.weight_map:compute_weights", COMPUTE_WEIGHTS),
    ("perta_hub.evaluation.tofu:run_evaluation", EVALUATE),
    ("perta_hub.evaluation.tofu:evaluate_tofu", EVALUATE),
    ("perta_hub.evaluation.bootstrap:compare_files", COMPARE),
    ("perta_hub.hub.publish:publish", PUBLISH),
    ("perta_hub.demo:run_demo", DEMO),
    ("perta_hub.training.finetune:finetune", FINETUNE),
    ("perta_hub.unlearning.command:unlearn", UNLEARN),
])
def test_api_keyword_defaults_are_the_options_defaults(func: str, options: Any) -> None:
    import importlib

    module, name = func.split(":")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    shared = [p for p in signature.parameters.values()
              if p.default is not inspect.Parameter.empty and hasattr(options, p.name)]
    assert shared, func
    for param in shared:
        assert param.default == getattr(options, param.name), (func, param.name)


def test_every_training_flag_is_a_training_options_field() -> None:
    assert [f.name for f, _ in flags_of(TrainingOptions)] == [f.name for f in dataclasses.fields(TrainingOptions)]
    assert TrainingOptions().epochs == 5.0 and TrainingOptions().lr == 1e-5


def test_options_objects_validate_without_click() -> None:
    with pytest.raises(InputError, match=r"^--device: 'gpu' is not one of auto, cpu, cuda$"):
        ApplyOptions(device="gpu")
    with pytest.raises(InputError, match=r"^--batch-size: 0 is not in the range 1 <= x$"):
        EvaluateOptions(batch_size=0)
    with pytest.raises(InputError, match=r"^--retain-fraction: 0.0 is not in the range 0 < x <= 1$"):
        ComputeWeightsOptions(retain_fraction=0.0)
    with pytest.raises(InputError, match="-q/--quiet or -v/--verbose"):
        OutputOptions(quiet=True, verbose=True)
    with pytest.raises(InputError, match="only apply with --push REPO"):
        PushOptions(include=("*.txt",)).check_outputs(1)
    import click  # noqa: F401  (imported above by the CLI; the options modules themselves do not need it)

    code = ("import sys; import perta_hub.options.apply, perta_hub.options.push, perta_hub.options.evaluate, "
            "perta_hub.options.compute_weights, perta_hub.options.demo, perta_hub.options.training; "
            "print('click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TrainingOptions(epochs=0), "--epochs: 0 is not in the range 0 < x"),
    (lambda: TrainingOptions(grad_accum=0), "--grad-accum: 0 is not in the range 1 <= x"),
    (lambda: TrainingOptions(weight_decay=-0.1), "--weight-decay: -0.1 is not in the range 0 <= x"),
    (lambda: TrainingOptions(max_length=1), "--max-length: 1 is not in the range 2 <= x"),
    (lambda: TrainingOptions(batch_size=2.5), "--batch-size: expected an integer, got 2.5"),
    (lambda: TrainingOptions(device="gpu"), "--device: 'gpu' is not one of auto, cpu, cuda"),
    (lambda: TrainingOptions(train_dtype="float16"), "--train-dtype: 'float16' is not one of auto, bfloat16, float32"),
    (lambda: TrainingOptions(save_dtype="fp8"), "--save-dtype: 'fp8' is not one of auto, float32, bfloat16, float16"),
    (lambda: TrainingOptions(lora_alpha=8.0), "--lora-alpha only applies with --lora-rank"),
    (lambda: TrainingOptions(epochs=1, warmup=2), "--warmup 2 epochs is longer than --epochs 1; lower it"),
    (lambda: UnlearnTrainingOptions(lora_rank=2),
     "unlearn trains the whole model; --lora-rank is not supported here (drop it)"),
    (lambda: UnlearnOptions(method="xx"), "--method: 'xx' is not one of ga, gd, npo"),
    (lambda: UnlearnOptions(method="gd", gamma=0.0), "--gamma: 0.0 is not in the range 0 < x"),
    (lambda: UnlearnOptions(method="gd"), "--method gd (GradDiff) needs --retain DATA (the retain term)"),
    (lambda: UnlearnOptions(method="ga", retain="r"),
     "--method ga uses only the forget data; drop --retain/--retain-weight, or use --method gd"),
    (lambda: UnlearnOptions(method="npo", retain_weight=2.0), "--retain-weight only applies with --retain"),
    (lambda: UnlearnOptions(method="ga", gamma=2.0), "--gamma only applies to --method gd or npo"),
    (lambda: UnlearnOptions(method="gd", retain="r", beta=0.5), "--beta only applies to --method npo"),
    (lambda: ComputeWeightsOptions(unrestricted_rest=True), "--unrestricted-rest only applies with --params"),
    (lambda: ComputeWeightsOptions(dtype="bf16"), "--dtype: 'bf16' is not one of bfloat16, float16, float32"),
    (lambda: TrainingOptions.resolve(None, {"epoch": 3}), "unknown option(s) epoch; see TrainingOptions"),
])
def test_declared_checks_name_the_option_in_one_line(make: Any, message: str) -> None:
    with pytest.raises(InputError) as err:
        make()
    assert str(err.value) == message


def test_resolve_keeps_the_given_options_and_checks_the_result() -> None:
    given = TrainingOptions(epochs=3, lr=2e-5)
    assert TrainingOptions.resolve(given, {"lr": 1e-4}) == TrainingOptions(epochs=3, lr=1e-4)
    assert UnlearnTrainingOptions.resolve(None, {}) == UnlearnTrainingOptions()
    unlearn = UnlearnTrainingOptions.resolve(given, {})  # a TrainingOptions given to unlearn: unlearn's rules
    assert type(unlearn) is UnlearnTrainingOptions and unlearn.epochs == 3
    with pytest.raises(InputError, match="--lora-rank is not supported"):
        UnlearnTrainingOptions.resolve(TrainingOptions(lora_rank=2), {})
    assert UnlearnOptions(method="npo", retain="r").retain_weight_in_effect == 1.0
    assert UnlearnOptions(method="npo").retain_weight_in_effect == 0.0


@pytest.mark.parametrize(("args", "call"), [
    (["finetune", "m", "--data", "d", "--lora-alpha", "8"],
     lambda out: perta_hub.finetune("m", "d", out, lora_alpha=8.0)),
    (["finetune", "m", "--data", "d", "--epochs", "1", "--warmup", "2"],
     lambda out: perta_hub.finetune("m", "d", out, epochs=1.0, warmup=2.0)),
    (["compute-weights", "m", "--forget", "f", "--retain", "r", "--method", "grad", "--unrestricted-rest"],
     lambda out: perta_hub.compute_weights("m", "f", "r", out, unrestricted_rest=True)),
    (["unlearn", "m", "--method", "gd", "--forget", "f"],
     lambda out: perta_hub.unlearn("m", "f", out, method="gd")),
    (["unlearn", "m", "--method", "ga", "--forget", "f", "--gamma", "2"],
     lambda out: perta_hub.unlearn("m", "f", out, method="ga", gamma=2.0)),
    (["unlearn", "m", "--method", "npo", "--forget", "f", "--retain-weight", "2"],
     lambda out: perta_hub.unlearn("m", "f", out, method="npo", retain_weight=2.0)),
    (["unlearn", "m", "--method", "npo", "--forget", "f", "--lora-rank", "2"],
     lambda out: perta_hub.unlearn("m", "f", out, method="npo", lora_rank=2)),
])
def test_the_command_line_and_the_api_give_the_same_line(tmp_path: Path, args: list[str], call: Any) -> None:
    """The options objects check both: the same one line, before any model or data is opened."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == InputError.exit_code, result.output
    with pytest.raises(InputError) as err:
        call(out)
    assert result.output.strip().splitlines()[-1] == f"Error: {err.value}"
    assert not out.exists()


def test_quiet_and_verbose_together_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "-q", "-v", "-o", str(tmp_path / "d")])
    assert result.exit_code == ExitCode.ERROR  # perta-hub's own check: one line, exit 1 (2 is click's parsing)
    assert result.output.strip() == "Error: pass either -q/--quiet or -v/--verbose, not both"


@pytest.fixture
def pair(tmp_path: Path, make_model: Any) -> tuple[Path, Path]:
    base = make_model("base", max_shard_size="4MB")
    tuned = make_model("tuned", seed=1, max_shard_size="4MB")
    return base, tuned


def _run(args: list[str], cwd: Path, *, tty: bool) -> tuple[int, str, str]:
    """``python -m perta_hub ARGS``; stderr on a pseudo-terminal (``tty``) or a file; returns (code, out, err)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "100"}
    cmd = [sys.executable, "-m", "perta_hub", *args]
    if not tty:
        err_file = cwd / "stderr.log"
        with err_file.open("w") as err:
            proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        return proc.returncode, proc.stdout, err_file.read_text()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns (tqdm reads them)
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out = proc.stdout.read().decode() if proc.stdout else ""
        proc.wait()
    finally:
        os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_progress_bars_only_on_a_terminal_and_not_with_quiet(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    base, tuned = pair
    args = ["task-vector", "--base", str(base), "--finetuned", str(tuned), "--max-shard-size", "100KB"]

    code, out, err = _run([*args, "-o", "tv-tty"], tmp_path, tty=True)
    assert code == 0, err
    assert "\r" in err and "task vector" in err  # the bar, drawn on a terminal

    code, out, err = _run([*args, "-o", "tv-file"], tmp_path, tty=False)
    assert code == 0, err
    assert "\r" not in err  # redirected: no bar frames, the phase's start and end lines instead
    assert err.splitlines()[0].startswith("task vector: started (") and "task vector: done, " in err, err
    assert out.strip() == "task vector written to tv-file"

    code, out, err = _run([*args, "-o", "tv-quiet", "-q"], tmp_path, tty=True)
    assert code == 0, err
    assert err.strip() == "" and out.strip() == "task vector written to tv-quiet"


def test_recorded_command_is_the_command_line(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    base, tuned = pair
    out_dir = tmp_path / "a dir"  # quoted in the record
    args = ["task-vector", "--base", str(base), "--finetuned", str(tuned), "-o", str(out_dir), "-q"]
    code, out, err = _run(args, tmp_path, tty=False)
    assert code == 0, err
    config = json.loads((out_dir / "perta_config.json").read_text())
    assert config["command"] == "perta-hub " + " ".join(shlex.quote(a) for a in args)

    result = CliRunner().invoke(main, [*args[:-2], str(tmp_path / "in-process")])  # same, through click
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "in-process" / "perta_config.json").read_text())
    assert config["command"] == "perta-hub " + " ".join(shlex.quote(a) for a in [*args[:-2],
                                                                              str(tmp_path / "in-process")])

    task_vector(base, tuned, tmp_path / "api", progress=False)  # a library call: no command line
    config = json.loads((tmp_path / "api" / "perta_config.json").read_text())
    assert config["command"] == "perta_hub Python API (" + shlex.quote(sys.argv[0]) + ")"


def test_verbose_logs_debug_lines(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    base, tuned = pair
    result = CliRunner().invoke(main, ["task-vector", "--base", str(base), "--finetuned", str(tuned),
                                       "-o", str(tmp_path / "tv"), "-v"])
    assert result.exit_code == 0, result.output
    assert "DEBUG perta_hub.cli: TaskVectorOptions(" in result.output
    assert "DEBUG perta_hub: running perta-hub task-vector" in result.output
    import logging

    assert not logging.getLogger("perta_hub").handlers  # restored after the command


def test_allocator_tuning_is_the_clis_alone(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    base, tuned = pair
    code = (f"import os; from perta_hub.merge.task_vector import task_vector; "
            f"task_vector({str(base)!r}, {str(tuned)!r}, {str(tmp_path / 'api')!r}, progress=False); "
            "print(os.environ.get('THP_MEM_ALLOC_ENABLE'))")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"  # a library call leaves the process's allocators alone

    code = ("import os; from perta_hub.cli import main; "
            f"main(['task-vector', '--base', {str(base)!r}, '--finetuned', {str(tuned)!r}, '-o', "
            f"{str(tmp_path / 'cli')!r}, '-q'], standalone_mode=False); "
            "print(os.environ.get('THP_MEM_ALLOC_ENABLE'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"  # the CLI owns its process and tunes it
