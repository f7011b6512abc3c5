"""Progress off a terminal: log lines with done/total and the time left, no bar frames; -q silent; -v adds detail."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.runtime import progress
from perta_hub.runtime.progress import Progress, duration, phase


def _evaluate(model: Path, tofu_dir: Path, *flags: str) -> tuple[int, str]:
    """``perta-hub evaluate`` on 3 rows of each split through CliRunner (stderr is not a terminal)."""
    result = CliRunner().invoke(main, ["evaluate", str(model), "--forget-split", "forget10", "--data-dir",
                                       str(tofu_dir), "--max-examples", "3", "--device", "cpu", "--batch-size", "2",
                                       "--max-new-tokens", "4", *flags])
    assert result.exit_code == 0, result.output
    return result.exit_code, result.stderr


def test_evaluate_reports_progress_lines_not_bars(make_model: Callable[..., Path], tofu_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.utils as hub_utils

    bars_before = hub_utils.are_progress_bars_disabled()
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)  # a line at every update instead of every 30 s
    model = make_model("m")
    _, err = _evaluate(model, tofu_dir)
    lines = err.splitlines()
    assert "\r" not in err  # no bar frames: neither perta-hub's nor the libraries' (datasets, transformers)
    assert "Loading weights" not in err and "Generating" not in err, err
    assert f"loading {model}: started" in lines and any(re.fullmatch(rf"loading {re.escape(str(model))}: done in "
                                                                     r"\d+s", line) for line in lines), err
    assert "forget Q/A: started (3 ex)" in lines
    assert any(re.fullmatch(r"forget Q/A: 2/3 ex \(67%\), ~\d+s left", line) for line in lines), err
    assert any(re.fullmatch(r"forget Q/A: done, 3/3 ex in \d+s \([\d,.]+ ex/s\)", line) for line in lines), err
    assert any(re.fullmatch(r"forget perturbed: 10/15 ex \(67%\), ~\d+s left", line) for line in lines), err
    assert any(line.startswith("wf generation: done, 3/3 ex") for line in lines), err
    assert hub_utils.are_progress_bars_disabled() == bars_before  # the libraries' settings are restored


def test_evaluate_quiet_and_verbose(make_model: Callable[..., Path], tofu_dir: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    model = make_model("m")
    _, err = _evaluate(model, tofu_dir, "-q")
    assert err == ""  # no progress lines, no status lines
    _, err = _evaluate(model, tofu_dir, "-v")
    assert "INFO perta_hub.progress: forget Q/A: started (3 ex)" in err
    assert re.search(r"DEBUG perta_hub.runtime: .*: LlamaForCausalLM from .*, [\d,]+ parameters, dtype "
                     r"torch.float32, on cpu", err), err
    assert "Loading weights" in err  # -v: the libraries' own bars too


def test_lines_are_rate_limited(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="perta_hub.progress")
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    with Progress("phase", 400, unit="ex") as bar:  # 30 s between lines: only the start and the end
        for _ in range(40):
            bar.update(10)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["phase: started (400 ex)", "phase: done"]
    caplog.clear()
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    with Progress("phase", 400, unit="ex") as bar:
        bar.update(120)
        bar.set_postfix("loss 2.31")
        bar.update(80)
    messages = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"phase: 120/400 ex \(30%\), ~\d+s left", messages[1])
    assert re.fullmatch(r"phase: 200/400 ex \(50%\), ~\d+s left \(loss 2.31\)", messages[2])
    assert len(messages) == 4


def test_failed_phase_and_bytes_and_uncounted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="perta_hub.progress")
    with pytest.raises(KeyboardInterrupt), Progress("write", 4_000_000, unit="B", unit_scale=True) as bar:
        bar.update(1_000_000)
        raise KeyboardInterrupt
    with phase("upload"):
        pass
    assert [r.getMessage() for r in caplog.records][0] == "write: started (4.00MB)"
    assert re.fullmatch(r"write: stopped at 1.00M/4.00MB after \d+s", caplog.records[1].getMessage())
    assert [r.getMessage() for r in caplog.records][2:] == ["upload: started", "upload: done in 0s"]
    with Progress("off", 3, enabled=False) as bar:
        bar.update(3)
    assert len(caplog.records) == 4


def test_duration() -> None:
    assert [duration(s) for s in (0.4, 45, 130, 3600 + 5 * 60 + 1)] == ["0s", "45s", "2m10s", "1h05m"]
