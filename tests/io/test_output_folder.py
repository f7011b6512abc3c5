"""Output folders: one writer at a time, no-op re-runs, restore after a failure, refusals before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from perta_hub.errors import NonFiniteError, OutputError
from perta_hub.io.output_folder import MARKER, FolderState, OutputFolder
from perta_hub.merge.apply import apply
from perta_hub.merge.task_vector import task_vector
from perta_hub.records import read_record
from tests.helpers import REPO, load_state, rewrite_tensors


def stat_digest(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime (ns) of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_of_finished_outputs_changes_no_file(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    outs = apply(base, tv, alphas=[0.5, 1.0], out_dir=tmp_path / "out", progress=False)
    # what `push` records after publishing: must survive a re-run
    record = read_record(outs[0]).with_hub({"repo_id": "me/x", "revision": "main", "commit": "0" * 40})
    (outs[0] / "perta_config.json").write_text(record.to_json())
    before_tv, before_out = stat_digest(tv), stat_digest(tmp_path / "out")
    time.sleep(0.01)
    assert task_vector(base, tuned, tmp_path / "tv", progress=False) == tv
    assert apply(base, tv, alphas=[0.5, 1.0], out_dir=tmp_path / "out", progress=False) == outs
    assert stat_digest(tv) == before_tv
    assert stat_digest(tmp_path / "out") == before_out
    assert read_record(outs[0]).hub == {"repo_id": "me/x", "revision": "main", "commit": "0" * 40}


def test_rerun_of_finished_weight_map_changes_no_file(tmp_path, make_model):
    from perta_hub.importance.weight_map import compute_weights

    base = make_model("base")
    args = (base, "tofu:forget01", "tofu:retain99", tmp_path / "wm")
    compute_weights(*args, method="grad", max_examples=4, progress=False)
    before = stat_digest(tmp_path / "wm")
    time.sleep(0.01)
    compute_weights(*args, method="grad", max_examples=4, progress=False)
    assert stat_digest(tmp_path / "wm") == before


def test_sweep_resumes_only_the_missing_alpha(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    first = apply(base, tv, alphas=[0.5], out_dir=tmp_path / "one", progress=False)[0]
    outs = apply(base, tv, alphas=[0.5, 2.0], out_dir=tmp_path / "sweep", progress=False)
    kept = stat_digest(outs[0])
    # remove the second alpha: the re-run writes it again and leaves the first untouched
    for item in outs[1].iterdir():
        item.unlink()
    outs[1].rmdir()
    apply(base, tv, alphas=[0.5, 2.0], out_dir=tmp_path / "sweep", progress=False)
    assert stat_digest(outs[0]) == kept
    for name, tensor in load_state(outs[1]).items():
        assert tensor.equal(load_state(apply(base, tv, alphas=[2.0], out_dir=tmp_path / "two",
                                             progress=False)[0])[name])
        break
    assert load_state(first).keys() == load_state(outs[0]).keys()


def _nan_in(folder: Path) -> None:
    def edit(state):
        name = sorted(state)[0]
        state[name][0] = float("nan")
        return state
    rewrite_tensors(folder, "model", edit)


@pytest.mark.parametrize("pre_existing", [False, True])
def test_failure_after_claim_restores_the_folder_and_the_fixed_rerun_works(tmp_path, make_model, pre_existing):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    _nan_in(tuned)
    out = tmp_path / "tv"
    if pre_existing:
        out.mkdir()
    with pytest.raises(NonFiniteError, match="has NaN or Inf"):
        task_vector(base, tuned, out, progress=False)
    if pre_existing:
        assert out.is_dir() and not any(out.iterdir())  # emptied, never deleted: this run did not create it
    else:
        assert not out.exists()
    fixed = make_model("tuned-fixed", seed=1)
    task_vector(base, fixed, out, progress=False)
    assert (out / "perta_config.json").is_file() and not (out / MARKER).exists()


def test_interrupted_run_of_other_inputs_is_refused_with_what_to_do(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    out = tmp_path / "tv"
    out.mkdir()
    (out / MARKER).write_text("another-run\n")
    with pytest.raises(OutputError, match="interrupted run of other inputs or options; re-run that command"):
        task_vector(base, tuned, out, progress=False)
    assert (out / MARKER).read_text() == "another-run\n"


def test_too_little_free_space_is_refused_before_writing(tmp_path, make_model, monkeypatch):
    import shutil

    from perta_hub.io import output_folder

    base, tuned = make_model("base"), make_model("tuned", seed=1)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(output_folder.shutil, "disk_usage", lambda _p: usage._replace(free=1000))
    with pytest.raises(OutputError, match=r"needs 0\.00 GB but its file system has 0\.00 GB free"):
        task_vector(base, tuned, tmp_path / "tv", progress=False)
    assert not (tmp_path / "tv").exists()


def test_folder_state_and_lock(tmp_path):
    folder = OutputFolder(tmp_path / "o", "run-a")
    assert folder.state() is FolderState.EMPTY
    with folder:
        assert folder.claim() is False
        assert folder.state() is FolderState.RESUMABLE
        other = OutputFolder(tmp_path / "o", "run-a")
        with pytest.raises(OutputError, match="is being written by another perta-hub run"):
            other.claim()
        assert OutputFolder(tmp_path / "o", "run-b").state() is FolderState.FOREIGN
    # released: the same run resumes
    with OutputFolder(tmp_path / "o", "run-a") as again:
        assert again.claim() is False


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from perta_hub.errors import PertaError
    from perta_hub.merge.task_vector import task_vector
    base, tuned, work, rounds = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    me = sys.argv[5]
    for r in range(rounds):
        (work / f"ready-{r}-{me}").touch()
        while not (work / f"go-{r}").exists():
            time.sleep(0.001)
        try:
            task_vector(base, tuned, work / f"out-{r}", max_shard_size="20KB", progress=False)
            print(f"{r} ok", flush=True)
        except PertaError as err:
            print(f"{r} refused {err}", flush=True)
""")


def test_two_processes_started_together_never_share_a_folder(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    reference = task_vector(base, tuned, tmp_path / "reference", max_shard_size="20KB", progress=False)
    work, rounds = tmp_path / "race", 8
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(base), str(tuned), str(work), str(rounds), me],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for me in ("a", "b")]
    for r in range(rounds):
        deadline = time.time() + 120
        while not all((work / f"ready-{r}-{me}").exists() for me in ("a", "b")):
            assert time.time() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.001)
        (work / f"go-{r}").touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    lines = [line for out, _ in outputs for line in out.splitlines()]
    assert len(lines) == 2 * rounds
    expected = {name: (reference / name).read_bytes() for name in os.listdir(reference) if name.endswith(".safetensors")}
    for r in range(rounds):
        results = [line.split(" ", 2)[1:] for line in lines if line.split(" ", 1)[0] == str(r)]
        assert any(kind == "ok" for kind, *_ in results)
        for kind, *rest in results:  # the loser waited for nothing: it was refused with the one line, or found
            if kind == "refused":     # the winner's complete output
                assert "is being written by another perta-hub run" in rest[0]
        out = work / f"out-{r}"
        assert sorted(p.name for p in out.iterdir()) == sorted(os.listdir(reference))
        for name, data in expected.items():
            assert (out / name).read_bytes() == data
        assert json.loads((out / "perta_config.json").read_text())["run_id"]


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs (root's permission bits would not stop root: a read-only mount does)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"needs mount(8) with CAP_SYS_ADMIN (root outside a restricted container) for a read-only tmpfs; here ({proc.stderr.decode().strip()[:80]})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("command", ["apply", "compute-weights"])
def test_read_only_output_is_one_line_before_any_work(tmp_path, make_model, read_only_dir, command):
    from click.testing import CliRunner

    from perta_hub.cli import main

    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    out = read_only_dir / "out"
    args = {"apply": ["apply", base, "--task-vector", tv, "--alpha", "1", "-o", out],
            "compute-weights": ["compute-weights", base, "--forget", "tofu:forget01", "--retain", "tofu:retain99",
                                "--method", "grad", "-o", out]}[command]
    start = time.perf_counter()
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert lines[-1] == f"Error: cannot write to {read_only_dir} (read-only or no permission); choose a writable -o"
    assert time.perf_counter() - start < 5  # refused before loading data or computing gradients
