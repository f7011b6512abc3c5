"""``perta-hub verify`` against the local Hub server: publish target, task vector, weight map and the unlearned
model, verify with --recompute, then tamper (each on its own branch) and see one failure line per tampering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import ExitCode
from tests.hub_server import HubServer, point_client_at


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def lines_with(output: str, status: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(status)]


def commit_of(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return result.output.strip().split("commit ")[-1].split()[0]


def publish_all(hub: HubServer, make_model: Any, tmp_path: Path) -> dict[str, str]:
    """Push target (public), task vector and weight map (private), apply from the Hub ids, push the model."""
    from perta_hub.importance.weight_map import compute_weights
    from perta_hub.merge.task_vector import task_vector

    target, tuned = make_model("target", seed=0), make_model("tuned", seed=1)
    shas = {"target": commit_of(run_cli("push", str(target), "user/target"))}
    tv = task_vector(target, tuned, tmp_path / "tv", max_shard_size="40KB", progress=False)
    shas["tv"] = commit_of(run_cli("push", str(tv), "user/tv"))
    wm = tmp_path / "wm"
    compute_weights(str(target), "tofu:forget01", "tofu:retain99", wm, method="grad", max_examples=4,
                    dtype="float32", device="cpu", progress=False, echo=lambda _line: None)
    shas["wm"] = commit_of(run_cli("push", str(wm), "user/wm"))
    result = run_cli("apply", "user/target", "--task-vector", "user/tv", "--weights", "user/wm", "--alpha", "0.5",
                     "-o", str(tmp_path / "model"), "--max-shard-size", "40KB", "--device", "cpu",
                     "--push", "user/model")
    shas["model"] = commit_of(result)
    shas["tv_head"] = hub.repo("user/tv").refs["main"]  # apply resolved main: the commit recording the push
    # a second task vector on a branch of the same repo: "another revision" of the recorded input
    tv2 = task_vector(target, make_model("tuned2", seed=2), tmp_path / "tv2", max_shard_size="40KB", progress=False)
    shas["tv2"] = commit_of(run_cli("push", str(tv2), "user/tv", "--revision", "v2"))
    return shas


def tamper(repo_id: str, branch: str, name: str, data: bytes) -> None:
    """Commit a changed file to a new branch of ``repo_id`` (the others stay as published)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_branch(repo_id, branch=branch)
    api.upload_file(path_or_fileobj=data, path_in_repo=name, repo_id=repo_id, revision=branch,
                    commit_message=f"tamper with {name}")


def test_published_model_verifies_and_each_tampering_fails(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    shas = publish_all(hub, make_model, tmp_path)
    report = tmp_path / "audit.json"
    result = run_cli("verify", "user/model", "--recompute", "--report", str(report))
    assert result.exit_code == 0, result.output
    passed = "\n".join(lines_with(result.output, "PASS"))
    for expected in ("file hashes:", "the Hub's LFS sha256 and the files' bytes", "indexes:", "card:",
                     "inputs pinned: 3 input(s)", f"target input: user/target@{shas['target']}",
                     "tensors: every tensor recomputed", "task vector private: user/tv is not readable without a token",
                     "weights private: user/wm is not readable", "card scan: the card quotes none of"):
        assert expected in passed, result.output
    audit = json.loads(report.read_text())
    assert audit["outcome"] == "pass" and audit["subject"]["repo_id"] == "user/model"
    assert audit["inputs"]["task_vector"] == {"source": "user/tv", "repo_id": "user/tv", "revision": shas["tv_head"],
                                              "found_revision": shas["tv_head"],
                                              "found_at": f"user/tv@{shas['tv_head']}"}
    assert audit["exit_code"] == 0 and not audit["summary"]["fail"] and not audit["summary"]["unverified"]
    files = hub.files("user/model")
    record = json.loads(files["perta_config.json"])
    assert record["hub"]["commit"] == shas["model"] and set(record["files"]) <= set(files)

    # flip one bit of one published shard
    shard = sorted(n for n in files if n.startswith("model-"))[1]
    flipped = bytearray(files[shard])
    flipped[-3] ^= 0x10
    tamper("user/model", "flip", shard, bytes(flipped))
    result = run_cli("verify", "user/model@flip", "--recompute", "--no-privacy")
    assert result.exit_code == 1
    fails = lines_with(result.output, "FAIL")
    assert any(f"file hashes: {shard}: the Hub's LFS sha256" in line for line in fails), result.output
    assert any("provenance tensors:" in line and "differs in 1 of" in line for line in fails), result.output

    # change the alpha in the card
    card = files["README.md"].decode().replace("alpha = 0.5", "alpha = 0.9")
    tamper("user/model", "card", "README.md", card.encode())
    result = run_cli("verify", "user/model@card", "--no-privacy")
    assert result.exit_code == 1
    assert lines_with(result.output, "FAIL") == [
        "FAIL         integrity  card: the card says alpha = 0.9 but perta_config.json says 0.5"]

    # point the record at another revision of the task vector
    record["task_vector"]["revision"] = shas["tv2"]
    tamper("user/model", "moved", "perta_config.json", (json.dumps(record, indent=2) + "\n").encode())
    result = run_cli("verify", "user/model@moved", "--recompute", "--no-privacy")
    assert result.exit_code == 1
    fails = lines_with(result.output, "FAIL")
    assert any("provenance tensors:" in line and "differs in" in line for line in fails), result.output
    assert any(f"the card names the task vector as user/tv at {shas['tv_head']}" in line for line in fails)

    # a revision that no longer exists: one line saying what could not be verified
    record["task_vector"]["revision"] = "0" * 40
    tamper("user/model", "gone", "perta_config.json", (json.dumps(record, indent=2) + "\n").encode())
    result = run_cli("verify", "user/model@gone", "--recompute", "--no-privacy")
    assert result.exit_code == 1
    assert any("task_vector input: cannot fetch user/tv@0000000000000000000000000000000000000000 (revision"
               in line for line in lines_with(result.output, "NOT VERIFIED")), result.output

    # make the task vector public
    hub.repo("user/tv").private = False
    result = run_cli("verify", "user/model")
    assert result.exit_code == 1
    assert lines_with(result.output, "FAIL") == [
        "FAIL         privacy    task vector private: user/tv is public (readable by anyone, without a token), but "
        "it is derived from the forget data; make it private"]


def test_private_input_without_token_is_not_verified(hub: HubServer, make_model: Any, tmp_path: Path,
                                                      monkeypatch: Any) -> None:
    from perta_hub.merge.apply import apply
    from perta_hub.merge.task_vector import task_vector

    target, tuned = make_model("target", seed=0), make_model("tuned", seed=1)
    tv = task_vector(target, tuned, tmp_path / "tv", max_shard_size="40KB", progress=False)
    commit_of(run_cli("push", str(tv), "user/tv"))
    model = apply(target, "user/tv", alphas=[1.0], out_dir=tmp_path / "model", device="cpu",
                  max_shard_size="40KB", progress=False)[0]
    point_client_at(monkeypatch, hub.url, tmp_path / "anonymous", token=None)
    result = run_cli("verify", str(model), "--recompute")
    assert result.exit_code == ExitCode.NOT_VERIFIED
    unverified = lines_with(result.output, "NOT VERIFIED")
    assert any("task_vector input: cannot fetch user/tv@" in line and "HF_TOKEN" in line for line in unverified)
    assert any("provenance tensors: not recomputed" in line for line in unverified)
    # still private: that much can be told without a token
    assert any("task vector private: user/tv is not readable without a token" in line
               for line in lines_with(result.output, "PASS")), result.output
