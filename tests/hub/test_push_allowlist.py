"""What ``push`` uploads (an allow-list per kind), the card check against the recorded forget data, and a
connection lost mid-upload: the real huggingface_hub client against the local Hub server."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from perta_hub.errors import PertaError
from tests.hub.test_hub import error_line, make_task_vector, run_cli
from tests.hub_server import HubServer

EXTRAS = {
    "trainer_state.json": b'{"log_history": []}',
    "training_args.bin": b"\x80\x04pickle",
    "optimizer.pt": b"\x00optimizer",
    "scheduler.pt": b"\x00scheduler",
    "pytorch_model.bin": b"\x00weights",
    "checkpoint-1/model.safetensors": b"\x00old",
    "checkpoint-1/trainer_state.json": b"{}",
    "forget.jsonl": b'{"question": "q", "answer": "a"}\n',
    "logs/train.log": b"step 1 loss 2.0\n",
    "model-00009-of-00009.safetensors": b"\x00a shard the index does not name",
}


def remote_files(repo_id: str, revision: str | None = None) -> set[str]:
    from huggingface_hub import HfApi

    return set(HfApi().list_repo_files(repo_id, revision=revision)) - {".gitattributes"}


def add_extras(folder: Path, nested: Path | None = None) -> set[str]:
    """Write the files push must leave out; returns their relative paths."""
    for name, data in EXTRAS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    names = set(EXTRAS)
    if nested is not None:  # another artifact inside this one
        shutil.copytree(nested, folder / "nested-tv")
        names |= {f"nested-tv/{p.relative_to(nested).as_posix()}" for p in nested.rglob("*") if p.is_file()}
    return names


def listed(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_model_push_uploads_exactly_the_allow_list(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    model = make_model("model")
    (model / "README.md").write_text("---\nlibrary_name: transformers\n---\n# tiny\n")
    expected = listed(model)  # the model as built: shards, index, config, tokenizer, chat template, card
    assert {"model.safetensors.index.json", "tokenizer.json", "chat_template.jinja"} <= expected
    extras = add_extras(model, nested=make_task_vector(make_model, tmp_path))
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 0, result.output
    assert remote_files("user/m") == expected
    line = next(line for line in result.output.splitlines() if line.startswith("push: left out"))
    assert f"left out {len(extras)} file(s)" in line
    for shown in ("trainer_state.json", "optimizer.pt", "pytorch_model.bin", "checkpoint-1/", "nested-tv/",
                  "forget.jsonl", "logs/", "model-00009-of-00009.safetensors"):
        assert shown in line
    assert "--include" in line

    # --include adds files explicitly (a pattern relative to the folder); the rest stays out
    result = run_cli("push", str(model), "user/m", "--include", "trainer_state.json", "--include", "logs/*.log")
    assert result.exit_code == 0, result.output
    assert remote_files("user/m") == expected | {"trainer_state.json", "logs/train.log"}


def test_api_result_lists_left_out_and_stale_files_are_deleted(hub: HubServer, make_model: Any) -> None:
    from huggingface_hub import HfApi

    from perta_hub.hub.publish import publish

    model = make_model("model")
    HfApi().create_repo("user/m")
    HfApi().upload_file(path_or_fileobj=b"\x00old optimizer", path_in_repo="optimizer.pt", repo_id="user/m")
    (model / "optimizer.pt").write_bytes(b"\x00optimizer")
    (model / "notes.txt").write_text("private notes")
    result = publish(model, "user/m")
    assert result.left_out == ("notes.txt", "optimizer.pt")
    assert any("notes.txt, optimizer.pt" in n for n in result.notes)
    assert remote_files("user/m") == listed(model) - {"notes.txt", "optimizer.pt"}  # the stale optimizer.pt deleted


def test_each_kind_uploads_its_own_weights(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    from perta_hub.hub.publish import publish

    tv = make_task_vector(make_model, tmp_path)
    expected = listed(tv)
    (tv / "model.safetensors").write_bytes((next(tv.glob("task_vector*.safetensors"))).read_bytes())
    result = publish(tv, "user/tv")
    assert remote_files("user/tv") == expected and result.left_out == ("model.safetensors",)

    # a fine-tuned model with its LoRA adapter: the adapter folder is part of it, other adapter files are not
    ft = make_model("ft")
    (ft / "perta_config.json").write_text(json.dumps({"kind": "finetuned_model", "command": "perta-hub finetune",
                                                          "base": {"source": "base"}}))
    (ft / "adapter").mkdir()
    (ft / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (ft / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00lora")
    (ft / "adapter" / "README.md").write_text("peft's own card")
    expected = listed(ft) - {"adapter/README.md"}
    result = publish(ft, "user/ft")
    assert remote_files("user/ft") == expected and result.left_out == ("adapter/README.md",)


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_index_naming_a_file_outside_is_refused(name: str, hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    model = make_model("model")
    index = model / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = name
    index.write_text(json.dumps(data))
    (tmp_path / "outside.safetensors").write_bytes(b"secret")
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code != 0
    assert repr(name) in error_line(result)
    assert ("model", "user/m") not in hub.repos


def test_include_cannot_climb_out(hub: HubServer, make_model: Any) -> None:
    from perta_hub.hub.publish import publish

    model = make_model("model")
    with pytest.raises(PertaError, match="relative to"):
        publish(model, "user/m", include=["../*"])
    assert ("model", "user/m") not in hub.repos


# -- the card check against the recorded forget data ----------------------------------------------------------


def forget_artifact(make_model: Any, tmp_path: Path, data: Path, *, record_files: bool = True) -> Path:
    """A task vector whose perta_config.json records ``data`` as its forget data (spec relative to tmp_path)."""
    tv = make_task_vector(make_model, tmp_path)
    config = json.loads((tv / "perta_config.json").read_text())
    info: dict[str, Any] = {"spec": data.name, "dataset_id": None, "config": None, "local_file": data.name,
                            "question_field": "question", "answer_field": "answer"}
    if record_files:
        info.update(source=str(data.resolve()),
                    files=[{"path": str(data.resolve()), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}])
    config["forget_data"] = info
    (tv / "perta_config.json").write_text(json.dumps(config, indent=2))
    return tv


@pytest.fixture
def forget_file(tmp_path: Path) -> Path:
    rows = [{"question": "What is the favourite colour of the novelist Basil Mahfouz Al-Kuwaiti?",
             "answer": "Basil Mahfouz Al-Kuwaiti's favourite colour is a deep shade of emerald green."},
            {"question": "Where was the author Nikolai Abilov born?", "answer": "In Astana, Kazakhstan, in 1970."}]
    path = tmp_path / "data" / "forget.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rows))
    return path


def test_card_check_works_from_any_directory(hub: HubServer, make_model: Any, tmp_path: Path, forget_file: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tv = forget_artifact(make_model, tmp_path, forget_file)
    card = (tv / "README.md").read_text()
    (tv / "README.md").write_text(card + "\nExample: Where was the author Nikolai Abilov born?\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the spec "forget.json" means nothing here; the recorded path does
    result = run_cli("push", str(tv), "user/tv")
    assert result.exit_code != 0
    assert "quotes 1 forget-set example(s)" in error_line(result)
    assert ("model", "user/tv") not in hub.repos

    (tv / "README.md").write_text(card)
    result = run_cli("push", str(tv), "user/tv")
    assert result.exit_code == 0, result.output
    assert "not checked" not in result.output


@pytest.mark.parametrize("case", ["moved", "changed", "legacy-moved"])
def test_unreachable_forget_data_needs_skip_card_check(case: str, hub: HubServer, make_model: Any, tmp_path: Path,
                                                       forget_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tv = forget_artifact(make_model, tmp_path, forget_file, record_files=case != "legacy-moved")
    monkeypatch.chdir(tmp_path)
    if case == "changed":
        forget_file.write_text(forget_file.read_text().replace("1970", "1971"))
    else:
        forget_file.rename(tmp_path / "moved.json")
    result = run_cli("push", str(tv), "user/tv")
    assert result.exit_code != 0
    line = error_line(result)
    assert "cannot check the card" in line and "--skip-card-check" in line
    assert {"moved": "no longer at", "changed": "sha256 differs", "legacy-moved": "not reachable"}[case] in line
    assert ("model", "user/tv") not in hub.repos

    result = run_cli("push", str(tv), "user/tv", "--skip-card-check")
    assert result.exit_code == 0, result.output
    assert "the card was not checked for forget-set examples" in result.output
    assert any(p.endswith(".safetensors") for p in remote_files("user/tv"))


def test_legacy_record_of_bundled_data_is_still_checked(hub: HubServer, make_model: Any, tmp_path: Path,
                                                        tofu_dir: Path) -> None:
    from perta_hub.hub.publish import publish

    tv = make_task_vector(make_model, tmp_path)
    config = json.loads((tv / "perta_config.json").read_text())
    config["forget_data"] = {"spec": "tofu:forget01", "dataset_id": "locuslab/TOFU", "config": "forget01",
                             "bundled": True, "question_field": "question", "answer_field": "answer"}
    (tv / "perta_config.json").write_text(json.dumps(config))
    row = json.loads((tofu_dir / "forget01.json").read_text())[3]
    (tv / "README.md").write_text((tv / "README.md").read_text() + "\n" + row["answer"] + "\n")
    with pytest.raises(PertaError, match=r"quotes \d forget-set example"):
        publish(tv, "user/tv")


# -- a connection lost mid-upload ------------------------------------------------------------------------------


def test_connection_dropped_at_the_commit_is_one_line_and_rerun_completes(hub: HubServer, make_model: Any) -> None:
    model = make_model("model", max_shard_size="40KB")
    shards = sorted(model.glob("*.safetensors"))
    assert len(shards) >= 3
    hub.drop("POST", r"/api/models/user/m/commit/")  # the socket closes once the shards are uploaded
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith("Error: cannot reach http://127.0.0.1:") and "Re-run the same command" in line
    assert hub.requests("POST", "/commit/") and hub.requests("POST", "/commit/")[0][2] == 0  # really dropped
    assert hub.repo("user/m").commits[hub.repo("user/m").refs["main"]].title == "initial commit"
    uploaded_first = list(hub.uploaded)
    assert len(uploaded_first) == len(shards)

    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 0, result.output
    assert hub.uploaded == uploaded_first  # nothing sent twice
    assert remote_files("user/m") == listed(model)


def test_connection_dropped_during_an_upload_is_retried(hub: HubServer, make_model: Any) -> None:
    """huggingface_hub retries an LFS upload whose connection dropped (up to 5 times, with backoff)."""
    model = make_model("model", max_shard_size="40KB")
    shards = sorted(model.glob("*.safetensors"))
    hub.drop("PUT", r"^/lfs-upload/", skip=1)  # the socket closes during the second shard's upload
    result = run_cli("push", str(model), "user/m")
    assert result.exit_code == 0, result.output
    assert [r for r in hub.requests("PUT", "^/lfs-upload/") if r[2] == 0]
    assert sorted(hub.uploaded) == sorted(set(hub.uploaded)) and len(hub.uploaded) == len(shards)  # each once
    assert remote_files("user/m") == listed(model)


def test_compute_weights_records_the_data_so_push_checks_it_from_elsewhere(
        hub: HubServer, make_model: Any, tmp_path: Path, forget_file: Path, tofu_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: the data spec is relative to the cwd of compute-weights; push runs from another cwd."""
    target = make_model("target")
    monkeypatch.chdir(forget_file.parent)
    result = run_cli("compute-weights", str(target), "--forget", forget_file.name, "--retain",
                     str(tofu_dir / "retain99.json"), "--method", "grad", "--max-examples", "2", "--device", "cpu",
                     "--dtype", "float32", "-o", str(tmp_path / "wm"))
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "wm" / "perta_config.json").read_text())["forget_data"]
    assert recorded["files"] == [{"path": str(forget_file.resolve()),
                                  "sha256": hashlib.sha256(forget_file.read_bytes()).hexdigest()}]
    monkeypatch.chdir(tmp_path)
    card = tmp_path / "wm" / "README.md"
    card.write_text(card.read_text() + "\nIn Astana, Kazakhstan, in 1970.\n")
    result = run_cli("push", str(tmp_path / "wm"), "user/wm")
    assert "quotes 1 forget-set example(s)" in error_line(result) and result.exit_code != 0
