"""Hub round trips with the real huggingface_hub client against the local Hub-compatible server."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import HubError, InputError
from tests.hub.conftest import OTHER_TOKEN, READ_TOKEN, TOKEN
from tests.hub_server import HubServer, point_client_at


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def error_line(result: Any) -> str:
    """The one ``Error:`` line a failing command printed (stderr also holds progress bars)."""
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_task_vector(make_model: Any, tmp_path: Path, name: str = "tv") -> Path:
    from perta_hub.merge.task_vector import task_vector

    base, tuned = make_model("base", seed=0), make_model("tuned", seed=1)
    return task_vector(base, tuned, tmp_path / name, max_shard_size="40KB", progress=False)


# -- pushing and loading back -------------------------------------------------------------------------------


def test_push_model_folder_and_load_back(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    model = make_model("model")
    result = run_cli("push", str(model), "user/tiny")
    assert result.exit_code == 0, result.output
    sha = hub.repo("user/tiny").refs["main"]
    assert f"commit {sha}" in result.output
    assert hub.repo("user/tiny").private is False  # models follow --private; default public

    from perta_hub.io.hub_source import download

    folder, resolved = download("user/tiny", ["*.json"])
    assert resolved == sha
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in model.glob("*.json"))
    folder, _ = download("user/tiny", ["*"])
    remote = files_of(folder)
    assert remote.pop(".gitattributes")
    assert remote == files_of(model)


def test_task_vector_is_private_by_default_and_records_commit(hub: HubServer, make_model: Any,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tv = make_task_vector(make_model, tmp_path)
    result = run_cli("push", str(tv), "user/tv")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output
    repo = hub.repo("user/tv")
    assert repo.private is True
    commit = result.output.strip().split("commit ")[-1].split()[0]
    assert commit in repo.commits

    # the files of `commit` are the folder as built; the head only adds the record of `commit`
    config = json.loads(hub.files("user/tv")["perta_config.json"])
    assert config["hub"] == json.loads((tv / "perta_config.json").read_text())["hub"]
    assert config["hub"]["commit"] == commit and config["hub"]["repo_id"] == "user/tv"
    assert f"commit `{commit}`" in hub.files("user/tv")["README.md"].decode()
    at_commit = hub.files("user/tv", commit)
    assert {k for k in at_commit if k.endswith(".safetensors")} == {p.name for p in tv.glob("*.safetensors")}
    assert "hub" not in json.loads(at_commit["perta_config.json"])
    command = json.loads((tv / "perta_config.json").read_text())["command"]
    assert repo.commits[commit].title == f"perta-hub: {command}" and command in repo.commits[commit].message
    for content in [*hub.files("user/tv").values(), *files_of(tv).values()]:
        assert TOKEN.encode() not in content  # never written anywhere

    # loads back by repo id (and at the recorded commit) as an artifact
    from perta_hub.io.artifacts import load_artifact

    artifact = load_artifact(f"user/tv@{commit}", "task_vector")
    assert artifact.revision == commit
    assert sorted(artifact.group("task_vector").names) == sorted(load_artifact(tv).group("task_vector").names)

    # a second push of the unchanged folder makes no commit
    heads = dict(repo.refs)
    again = run_cli("push", str(tv), "user/tv")
    assert again.exit_code == 0, again.output
    assert "nothing uploaded" in again.output and f"commit {commit}" in again.output
    assert repo.refs == heads

    # anonymous users do not see it
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="not found .* or your token has no access"):
        load_artifact("user/tv", "task_vector")


def test_public_artifact_warns_once(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    tv = make_task_vector(make_model, tmp_path)
    result = run_cli("push", str(tv), "user/tv-public", "--public")
    assert result.exit_code == 0, result.output
    assert result.output.count("Warning") == 1 and "derived from the forget data" in result.output
    assert hub.repo("user/tv-public").private is False


def test_artifact_refuses_existing_public_repo(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    HfApi().create_repo("user/shared", private=False)
    tv = make_task_vector(make_model, tmp_path)
    result = run_cli("push", str(tv), "user/shared")
    assert result.exit_code != 0
    assert "is public" in error_line(result) and "--public" in error_line(result)
    assert [p for p in hub.files("user/shared") if p.endswith(".safetensors")] == []


def test_second_push_removes_stale_shards_and_keeps_card(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    from perta_hub.hub.publish import push_folder

    first = make_model("v1", max_shard_size="40KB")
    (first / "README.md").write_text("---\nlibrary_name: transformers\n---\n# v1\n")
    push_folder(first, "user/m")
    first_shards = {p for p in hub.files("user/m") if p.endswith(".safetensors")}
    assert len(first_shards) > 2

    second = make_model("v2", seed=3, max_shard_size="1MB")  # one unsharded file now; no card
    sha = push_folder(second, "user/m")
    remote = hub.files("user/m")
    assert hub.repo("user/m").refs["main"] == sha
    assert {p for p in remote if p.endswith(".safetensors")} == {p.name for p in second.glob("*.safetensors")}
    assert first_shards - set(remote)  # stale shards are gone
    assert remote["README.md"] == (first / "README.md").read_bytes()  # the card is never deleted
    assert "model.safetensors.index.json" not in remote  # a stale index would make from_pretrained fail
    assert remote["model.safetensors"] == (second / "model.safetensors").read_bytes()


def test_branch_and_pull_request(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    from perta_hub.hub.publish import push_folder
    from perta_hub.io.hub_source import download

    model = make_model("model")
    main_sha = push_folder(model, "user/m")
    other = make_model("other", seed=5)
    result = run_cli("push", str(other), "user/m", "--revision", "dev")
    assert result.exit_code == 0, result.output
    repo = hub.repo("user/m")
    assert repo.refs["main"] == main_sha and repo.refs["dev"] != main_sha
    folder, sha = download("user/m@dev", ["*.safetensors", "*.json", "*.jinja"])
    assert sha == repo.refs["dev"] and files_of(folder) == files_of(other)

    third = make_model("third", seed=6)
    result = run_cli("push", str(third), "user/m", "--create-pr")
    assert result.exit_code == 0, result.output
    assert "pull request" in result.output and "/discussions/1" in result.output
    assert repo.refs["main"] == main_sha
    folder, sha = download("user/m@refs/pr/1", ["*.safetensors"])
    assert sha == repo.refs["refs/pr/1"]
    assert files_of(folder) == {k: v for k, v in files_of(third).items() if k.endswith(".safetensors")}


# -- failures -----------------------------------------------------------------------------------------------


def test_commit_failure_then_rerun_uploads_nothing_again(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    model = make_model("model")
    hub.fail("POST", r"/api/models/user/m/commit/", status=500)
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 1
    line = error_line(result)
    assert "HTTP 500" in line and "Re-run the same command" in line
    uploaded_first = list(hub.uploaded)
    assert len(uploaded_first) == len(list(model.glob("*.safetensors")))

    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 0, result.output
    assert hub.uploaded == uploaded_first  # nothing sent twice
    assert files_of(model).items() <= hub.files("user/m").items()


def test_upload_failure_mid_push_then_rerun_completes(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    model = make_model("model", max_shard_size="40KB")
    shards = sorted(model.glob("*.safetensors"))
    assert len(shards) >= 3
    hub.fail("PUT", r"^/lfs-upload/", status=507, skip=1)  # the second upload fails (507 is not retried)
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 1
    line = error_line(result)
    assert "HTTP 507" in line and "Re-run" in line
    done = set(hub.uploaded)
    assert 1 <= len(done) < len(shards)
    assert hub.repo("user/m").commits[hub.repo("user/m").refs["main"]].title == "initial commit"

    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 0, result.output
    assert len(hub.uploaded) == len(set(hub.uploaded)) == len(shards)  # each shard sent exactly once
    assert files_of(model).items() <= hub.files("user/m").items()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("case", ["no-token", "wrong-token", "other-namespace", "read-only-token"])
def test_push_auth_errors_are_one_line(case: str, hub: HubServer, make_model: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model("model")
    token = {"no-token": None, "wrong-token": "hf_not_a_token", "other-namespace": OTHER_TOKEN,
             "read-only-token": READ_TOKEN}[case]
    if token is None:
        monkeypatch.delenv("HF_TOKEN")
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 1
    out = error_line(result)
    assert "hf_" not in result.output  # never print a token
    expected = {"no-token": "needs a Hugging Face token", "wrong-token": "rejected your Hugging Face token (401",
                "other-namespace": "may not write to user/m (403", "read-only-token": "may not write to user/m (403"}
    assert expected[case] in out
    assert ("model", "user/m") not in hub.repos


def test_download_errors_are_one_line(hub: HubServer, make_model: Any, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from perta_hub.hub.publish import push_folder
    from perta_hub.io.hub_source import download

    push_folder(make_model("model"), "user/m")
    with pytest.raises(HubError, match="user/missing was not found"):
        download("user/missing", ["*.json"])
    with pytest.raises(HubError, match="revision 'nope' does not exist in user/m"):
        download("user/m@nope", ["*.json"])
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    with pytest.raises(HubError, match="rejected your Hugging Face token"):
        download("user/m", ["*.json"])


def test_network_down(hub: HubServer, make_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model("model")
    point_client_at(monkeypatch, f"http://127.0.0.1:{_free_port()}", tmp_path / "home2", token=TOKEN)
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 1
    line = error_line(result)
    assert "cannot reach http://127.0.0.1:" in line and "Re-run" in line
    from perta_hub.io.hub_source import download

    with pytest.raises(HubError, match="cannot be reached"):
        download("user/m", ["*.json"])


def test_incomplete_folder_is_refused(hub: HubServer, make_model: Any) -> None:
    model = make_model("model", max_shard_size="40KB")
    next(model.glob("model-*.safetensors")).unlink()
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 1 and "lists missing shards" in error_line(result)
    assert ("model", "user/m") not in hub.repos


# -- cards ----------------------------------------------------------------------------------------------


def test_card_with_model_index_round_trips(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from perta_hub.cards.render import HUB_RELATIONS, hub_metadata_problems
    from perta_hub.hub.publish import push_folder

    model = make_model("model")
    data = ModelCardData(
        library_name="transformers", base_model="user/base", model_name="tiny-unlearned",
        eval_results=[EvalResult(task_type="text-generation", dataset_type="locuslab/TOFU", dataset_name="TOFU",
                                 dataset_config="forget01", metric_type="forget_quality", metric_value=0.405)],
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# tiny\n")
    assert hub_metadata_problems(card) == []  # the package's offline check accepts it
    card.save(str(model / "README.md"))
    push_folder(model, "user/m")
    loaded = ModelCard.load("user/m")
    assert loaded.data.base_model == "user/base"
    (result,) = loaded.data.eval_results
    assert (result.dataset_type, result.dataset_config, result.metric_type, result.metric_value) == (
        "locuslab/TOFU", "forget01", "forget_quality", 0.405)

    # push refuses, before anything is sent, a card the Hub would reject: a relation it does not know ...
    readme = model / "README.md"
    readme.write_text("---\nbase_model: user/base\nbase_model_relation: copy\n---\n# x\n")
    with pytest.raises(InputError) as err:
        push_folder(model, "user/other")
    assert str(err.value) == (f"the card {readme} is invalid: base_model_relation must be one of "
                              f"{', '.join(HUB_RELATIONS)}; fix it, then push")
    # ... and a model-index that does not parse
    readme.write_text("---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\n# bad\n")
    with pytest.raises(InputError, match=f"^the card {re.escape(str(readme))} is invalid: model-index does not "
                                         "parse"):
        push_folder(model, "user/other")
    assert ("model", "user/other") not in hub.repos


# -- end to end: artifacts and models by repo id --------------------------------------------------------------


def test_apply_with_hub_inputs_push_and_from_pretrained(hub: HubServer, make_model: Any, tmp_path: Path,
                                                         tofu_dir: Path) -> None:
    import torch
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM

    from perta_hub.cards.render import find_forget_examples
    from tests.helpers import load_state

    target = make_model("target", seed=0)
    (target / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# target\n")
    tuned = make_model("tuned", seed=1)
    tv = tmp_path / "tv"
    assert run_cli("task-vector", "--base", str(target), "--finetuned", str(tuned), "-o", str(tv),
                   "--max-shard-size", "40KB", "--push", "user/tv").exit_code == 0
    wm = tmp_path / "wm"
    result = run_cli("compute-weights", str(target), "--forget", "tofu:forget01", "--retain", "tofu:retain99",
                     "--method", "grad", "-o", str(wm), "--max-examples", "4", "--dtype", "float32", "--device", "cpu",
                     "--max-shard-size", "40KB", "--push", "user/wm")
    assert result.exit_code == 0, result.output
    forget_texts = [r[f] for r in json.loads((tofu_dir / "forget01.json").read_text()) for f in ("question", "answer")]
    assert find_forget_examples(hub.files("user/wm")["README.md"].decode(), forget_texts) == []
    assert find_forget_examples(forget_texts[0] + " " + forget_texts[1], forget_texts) == [0, 1]  # the check works
    result = run_cli("push", str(target), "user/target")
    assert result.exit_code == 0, result.output
    assert hub.repo("user/tv").private and hub.repo("user/wm").private and not hub.repo("user/target").private

    local = tmp_path / "local"
    assert run_cli("apply", str(target), "--task-vector", str(tv), "--weights", str(wm), "--alpha", "0.8",
                   "-o", str(local), "--device", "cpu").exit_code == 0
    remote = tmp_path / "remote"
    result = run_cli("apply", "user/target", "--task-vector", "user/tv", "--weights", "user/wm", "--alpha", "0.8",
                     "-o", str(remote), "--device", "cpu", "--push", "user/unlearned")
    assert result.exit_code == 0, result.output
    assert "Pushed" in result.output and "Warning" not in result.output
    expected, got = load_state(local), load_state(remote)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)

    config = json.loads((remote / "perta_config.json").read_text())
    assert config["target"]["revision"] == hub.repo("user/target").refs["main"]
    assert config["task_vector"]["revision"] == hub.repo("user/tv").refs["main"]
    assert config["weights"]["revision"] == hub.repo("user/wm").refs["main"]
    assert config["hub"]["repo_id"] == "user/unlearned" and hub.repo("user/unlearned").private is False

    card = ModelCard.load("user/unlearned")
    assert card.data.base_model == "user/target"
    assert card.data.base_model_relation == "merge" and card.data.license == "apache-2.0"

    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        hub_logits = AutoModelForCausalLM.from_pretrained("user/unlearned").eval()(ids).logits
        local_logits = AutoModelForCausalLM.from_pretrained(remote).eval()(ids).logits
    assert torch.equal(hub_logits, local_logits)


def test_offline_mode_uses_the_cache(hub: HubServer, make_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from perta_hub.hub.publish import push_folder
    from perta_hub.io.hub_source import download

    sha = push_folder(make_model("model"), "user/m")
    online, _ = download("user/m", ["*.json"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.log)
    folder, resolved = download("user/m", ["*.json"])
    assert (folder, resolved) == (online, sha) and len(hub.log) == before  # no request at all
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        download("user/never-downloaded", ["*.json"])
    with pytest.raises(HubError, match="pushing to user/m needs the network, but HF_HUB_OFFLINE is set"):
        push_folder(make_model("other"), "user/m")
