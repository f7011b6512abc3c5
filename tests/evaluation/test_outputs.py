"""`evaluate` outputs: -o, --plot and the retain logs never replace a file unless overwrite is asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import InputError, OutputError
from perta_hub.evaluation import run_evaluation

FAST = {"max_examples": 2, "device": "cpu", "max_new_tokens": 4, "batch_size": 8, "progress": False}
OLD = "my retain training data\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer) -> Path:
    from perta_hub.demo.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("eval-out") / "tiny", tokenizer, seed=0)


def _refused(path: Path, what: str) -> str:
    return f"{what} {path} already exists; pass --overwrite to replace it or choose another path"


@pytest.mark.parametrize("existing", ["output", "plot", "retain_beside_output", "retain_in_cwd"])
def test_existing_output_is_refused_before_any_model_runs(tmp_path, monkeypatch, tofu_dir, existing):
    monkeypatch.chdir(tmp_path)
    out, png = tmp_path / "retain.json", tmp_path / "sweep.png"
    files = {"output": (out, "-o"), "plot": (png, "--plot"),
             "retain_beside_output": (tmp_path / "retain.retain.json", "the retain model's logs"),
             "retain_in_cwd": (Path("tofu_forget10_retain_logs.json"), "the retain model's logs")}
    path, what = files[existing]
    path.write_text(OLD)
    kwargs = {"output": None if existing == "retain_in_cwd" else out,
              "plot": png if existing == "plot" else None}
    # the models do not exist: any work on them would fail differently, so the check comes first
    with pytest.raises(OutputError) as err:
        run_evaluation([str(tmp_path / "no-model")], retain_model=str(tmp_path / "no-retain-model"),
                       data_dir=tofu_dir, **kwargs, **FAST)
    assert str(err.value) == _refused(path, what)
    assert path.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_cli_refuses_an_existing_output_in_one_line(tmp_path, tofu_dir):
    out = tmp_path / "retain.json"
    out.write_text(OLD)
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "no-model"), "-o", str(out),
                                       "--data-dir", str(tofu_dir), "--device", "cpu"])
    assert result.exit_code == OutputError.exit_code == 1
    assert result.output == f"Error: {_refused(out, '-o')}\n"
    assert out.read_text() == OLD


def test_two_outputs_on_one_file_or_on_an_input_are_refused_even_with_overwrite(tmp_path, tofu_dir):
    logs = tmp_path / "logs.json"
    logs.write_text(json.dumps({"forget_truth_ratio": {"value_by_index": {"0": {"score": 0.5}}}}))
    same = tmp_path / "x.json"
    with pytest.raises(OutputError) as err:
        run_evaluation(["m"], retain_logs=logs, output=same, plot=same, overwrite=True, data_dir=tofu_dir)
    assert str(err.value) == f"-o and --plot both name {same}; choose two paths"
    with pytest.raises(OutputError) as err:
        run_evaluation(["m"], retain_logs=logs, output=logs, overwrite=True, data_dir=tofu_dir)
    assert str(err.value) == f"-o {logs} is also an input ({logs}); choose another path"
    with pytest.raises(OutputError) as err:
        run_evaluation(["m"], output=tmp_path, overwrite=True, data_dir=tofu_dir)
    assert str(err.value) == f"-o {tmp_path} is a folder; pass a file path"
    assert json.loads(logs.read_text())["forget_truth_ratio"]["value_by_index"]["0"]["score"] == 0.5


def test_plot_without_a_reference_is_refused_before_any_model_runs(tmp_path):
    with pytest.raises(InputError) as err:
        run_evaluation([str(tmp_path / "no-model")], plot=tmp_path / "p.png")
    assert str(err.value) == "--plot needs forget quality: pass --retain-logs FILE or --retain-model M"
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_every_output_whole(tmp_path, tiny_model, tofu_dir):
    out, png, saved = tmp_path / "res.json", tmp_path / "sweep.png", tmp_path / "res.retain.json"
    for p in (out, png, saved):
        p.write_text(OLD)
    run = run_evaluation([str(tiny_model)], forget_split="forget10", retain_model=str(tiny_model), output=out,
                         plot=png, overwrite=True, data_dir=tofu_dir, **FAST)
    assert (run["output"], run["plot"], run["retain_logs"]) == (out, png, saved)
    assert json.loads(out.read_text()) == run["results"][0]
    assert json.loads(out.read_text())["forget_quality"]["agg_value"] == pytest.approx(1.0)
    assert json.loads(saved.read_text())["meta"]["model"] == str(tiny_model)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.json", "res.retain.json", "sweep.png"]  # no temp


def test_cli_overwrite_flag_replaces_the_output(tmp_path, tiny_model, tofu_dir):
    out = tmp_path / "res.json"
    out.write_text(OLD)
    args = ["evaluate", str(tiny_model), "-o", str(out), "--data-dir", str(tofu_dir), "--max-examples", "2",
            "--device", "cpu", "--max-new-tokens", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and out.read_text() == OLD
    result = CliRunner().invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["meta"]["forget_split"] == "forget10"
