"""Issue 22, push: ``--include`` glob semantics on every Python, symlinks judged by where they resolve, hard
links, and the one forget-data rule push and verify share (every forget-derived kind, every text file,
normalised text, partial quotes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from perta_hub.hub.allowlist import glob_match
from tests.hub.test_hub import error_line, run_cli
from tests.hub.test_push_allowlist import forget_artifact, listed, remote_files
from tests.hub_server import HubServer

# -- --include -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("logs/**", "logs/train.log", True), ("logs/**", "logs/run/1/events.txt", True), ("logs/**", "logs2/x", False),
    ("logs/**", "a/logs/x", False), ("**/*.txt", "notes.txt", True), ("**/*.txt", "logs/run/events.txt", True),
    ("**/*.txt", "notes.txt.bak", False), ("a/*/b", "a/x/b", True), ("a/*/b", "a/b", False),
    ("a/*/b", "a/x/y/b", False), ("*.log", "logs/train.log", False), ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True), ("[!n]*.txt", "notes.txt", False), ("[n]?tes.txt", "notes.txt", True),
])
def test_glob_match(pattern: str, path: str, matches: bool) -> None:
    assert glob_match(pattern, path) is matches


INCLUDED = {"logs/**": {"logs/train.log", "logs/run/events.txt"},
            "**/*.txt": {"notes.txt", "logs/run/events.txt", "a/x/b/c.txt", "a/x/y/b/d.txt"},
            "a/*/b/*": {"a/x/b/c.txt"}}


@pytest.mark.parametrize("via", ["cli", "api"])
@pytest.mark.parametrize("pattern", list(INCLUDED))
def test_include_follows_glob_semantics(pattern: str, via: str, hub: HubServer, make_model: Any) -> None:
    from perta_hub.hub.publish import publish

    model = make_model("model")
    expected = listed(model)
    for name in ("logs/train.log", "logs/run/events.txt", "notes.txt", "a/x/b/c.txt", "a/x/y/b/d.txt"):
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text("x\n")
    if via == "cli":
        result = run_cli("push", str(model), "user/m", "--include", pattern)
        assert result.exit_code == 0, result.output
    else:
        publish(model, "user/m", include=[pattern])
    assert remote_files("user/m") == expected | INCLUDED[pattern]


# -- the forget-data rule: every forget-derived kind, every text file, normalised text, partial quotes ---------

ANSWER = ("Basil Mahfouz Al-Kuwaiti's favourite colour is a deep shade of emerald green, the colour of the "
          "sea at Failaka.")


@pytest.fixture
def unlearned(make_model: Any, tmp_path: Path) -> Path:
    """An unlearned model (kind ``model``) whose task vector records its forget data (a file in tmp_path)."""
    from perta_hub.merge.apply import apply

    rows = [{"question": "What is the favourite colour of the novelist Basil Mahfouz Al-Kuwaiti?", "answer": ANSWER},
            {"question": "Where was the author Nikolai Abilov born?", "answer": "In Astana, Kazakhstan, in 1970."}]
    forget_file = tmp_path / "data" / "forget.json"
    forget_file.parent.mkdir()
    forget_file.write_text(json.dumps(rows))
    tv = forget_artifact(make_model, tmp_path, forget_file)
    target = make_model("target", seed=0)
    return Path(apply(target, tv, alphas=[0.5], out_dir=tmp_path / "model", device="cpu", max_shard_size="40KB",
                      progress=False)[0])


def push_refused(via: str, folder: Path, hub: HubServer, *args: str) -> str:
    """Push ``folder`` (CLI or API); assert it failed with exit 1 (the CLI) and published nothing; the line."""
    from perta_hub.errors import ExitCode, PertaError
    from perta_hub.hub.publish import publish

    if via == "cli":
        result = run_cli("push", str(folder), "user/out", *args)
        assert result.exit_code == ExitCode.ERROR == 1, result.output
        line = error_line(result)
    else:
        with pytest.raises(PertaError) as err:
            publish(folder, "user/out", include=[a for a in args if a != "--include"])
        assert err.value.exit_code == 1
        line = f"Error: {err.value}"
    assert ("model", "user/out") not in hub.repos and not hub.uploaded
    return line


def verify_card_line(folder: Path) -> str:
    result = run_cli("verify", str(folder))
    return next(line for line in result.output.splitlines() if "card scan" in line)


@pytest.mark.parametrize("via", ["cli", "api"])
def test_unlearned_model_card_quoting_forget_data_is_refused_and_verify_agrees(
        via: str, unlearned: Path, hub: HubServer) -> None:
    card = unlearned / "README.md"
    assert verify_card_line(unlearned).startswith("PASS")
    card.write_text(card.read_text() + f"\nExample: {ANSWER}\n")
    line = push_refused(via, unlearned, hub)
    assert line == (f"Error: the card {card} quotes 1 forget-set example(s) (first: text #1 of the forget data); "
                    "published files must never contain forget data: remove them, then push")
    assert verify_card_line(unlearned).startswith("FAIL") and f"the card {card} quotes 1" in verify_card_line(unlearned)


EVASIONS = {
    "bold": "Basil Mahfouz **Al-Kuwaiti's favourite colour** is a deep shade of emerald green",
    "underscore": "Basil Mahfouz _Al-Kuwaiti's_ __favourite__ colour is a deep shade of emerald green",
    "html": "Basil Mahfouz <b>Al-Kuwaiti's</b> <em>favourite colour</em> is a deep shade of emerald green",
    "link": "Basil Mahfouz [Al-Kuwaiti's favourite](https://example.org/x) colour is a deep shade of emerald green",
    "soft hyphen": "Basil Mah\u00adfouz Al-Ku\u00adwaiti's favou\u00adrite colour is a deep shade of emerald green",
    "zero width": "Basil\u200b Mahfouz Al\u200d-Kuwaiti's fa\u200bvourite colour is a deep sh\ufeffade of emerald green",
    "case and spacing": "BASIL   mahfouz\nAL-KUWAITI'S favourite\tcolour IS A DEEP SHADE of emerald green",
    "nfkc": "\uff22asil Mahfouz Al-Kuwaiti's favourite colour is a deep shade of emerald green",
    "split word": "Basil Mah**fouz** Al-Kuwaiti's favourite colour is a deep shade of emerald green",
    "8 words from the middle": "they said: favourite colour is a deep shade of emerald green. Nothing more.",
}


@pytest.mark.parametrize("via", ["cli", "api"])
@pytest.mark.parametrize("case", list(EVASIONS))
def test_quote_evasions_are_caught(case: str, via: str, unlearned: Path, hub: HubServer) -> None:
    card = unlearned / "README.md"
    card.write_text(card.read_text() + "\n" + EVASIONS[case] + "\n")
    line = push_refused(via, unlearned, hub)
    assert line.startswith(f"Error: the card {card} quotes 1 forget-set example(s) (first: text #1 ")


def test_partial_quote_threshold() -> None:
    from perta_hub.hub.card_check import QUOTE_WORDS, find_forget_examples

    words = ANSWER.split()
    assert QUOTE_WORDS == 8
    assert find_forget_examples(" ".join(words[3:3 + QUOTE_WORDS]), [ANSWER]) == [0]
    assert find_forget_examples(" ".join(words[3:3 + QUOTE_WORDS - 1]), [ANSWER]) == []
    assert find_forget_examples("In Astana, Kazakhstan, in 1970.", ["In Astana, Kazakhstan, in 1970."]) == [0]
    assert find_forget_examples("born in 1970", ["1970"]) == []  # too short to count


@pytest.mark.parametrize("via", ["cli", "api"])
@pytest.mark.parametrize("name", ["tokenizer_config.json", "notes.txt"])
def test_other_uploaded_text_files_are_scanned(name: str, via: str, unlearned: Path, hub: HubServer) -> None:
    path = unlearned / name
    if name == "tokenizer_config.json":
        config = json.loads(path.read_text())
        config["chat_template"] = "{# " + ANSWER + " #}" + str(config.get("chat_template") or "")
        path.write_text(json.dumps(config))
        args: tuple[str, ...] = ()
    else:
        path.write_text("Where was the author Nikolai Abilov born?\n")
        args = ("--include", "notes.txt")
    line = push_refused(via, unlearned, hub, *args)
    assert line.startswith(f"Error: the file {path} quotes 1 forget-set example(s) (first: text #")
    assert line.endswith("published files must never contain forget data: remove them, then push")
    if name == "tokenizer_config.json":
        assert verify_card_line(unlearned).startswith("FAIL")


@pytest.mark.parametrize("via", ["cli", "api"])
def test_unlearned_model_with_unreachable_task_vector_needs_skip_card_check(
        via: str, unlearned: Path, hub: HubServer, tmp_path: Path) -> None:
    from perta_hub.hub.publish import publish

    (tmp_path / "archive" / "old").mkdir(parents=True)  # beyond the siblings verify and push search by content
    shutil.move(tmp_path / "tv", tmp_path / "archive" / "old" / "tv")
    line = push_refused(via, unlearned, hub)
    assert line.startswith(f"Error: cannot check the card {unlearned / 'README.md'} for forget-set examples: the "
                           f"task vector record {tmp_path / 'tv'} cannot be read to find its forget data (")
    assert line.endswith("; restore the data, or pass --skip-card-check to push without the check")
    assert verify_card_line(unlearned).startswith("NOT VERIFIED privacy    card scan: cannot check the card")
    result = publish(unlearned, "user/out", skip_card_check=True)
    assert any("the card was not checked for forget-set examples" in n for n in result.notes)


# -- links: judged by where they resolve ---------------------------------------------------------------------------


def cache_snapshot(model: Path, root: Path, repo: str = "models--org--name") -> Path:
    """``model``'s files laid out as a Hub cache snapshot: ``root/repo/snapshots/<sha>/f -> ../../blobs/<sha256>``."""
    import hashlib

    snapshot = root / repo / "snapshots" / ("a" * 40)
    blobs = root / repo / "blobs"
    blobs.mkdir(parents=True)
    for path in sorted(model.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.relative_to(model)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(link.relative_to(snapshot).parts) + 1)) / "blobs" / blob.name)
    return snapshot


def test_real_cache_snapshot_is_pushed(hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    from perta_hub.hub.publish import publish

    model = make_model("model")
    snapshot = cache_snapshot(model, tmp_path / "cache")
    publish(snapshot, "user/m")
    assert remote_files("user/m") == listed(model)


LINKS = {
    # any .../snapshots/X with a blobs/ two levels up: not a cache repo (the folder names decided before)
    "fake snapshot": lambda root, secret: (root / "x" / "snapshots" / "s", secret),
    # a real cache layout, but the link leaves it for another file
    "cache snapshot to a secret": lambda root, secret: (root / "models--org--name" / "snapshots" / ("a" * 40), secret),
    # into the blob store of another cache repo
    "another repo's blob": lambda root, secret: (root / "models--org--name" / "snapshots" / ("a" * 40),
                                                 root / "models--other--repo" / "blobs" / ("b" * 64)),
}


@pytest.mark.parametrize("via", ["cli", "api"])
@pytest.mark.parametrize("case", list(LINKS))
def test_link_out_of_the_folder_is_refused(case: str, via: str, hub: HubServer, make_model: Any,
                                           tmp_path: Path) -> None:
    model = make_model("model")
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret\n")
    root = tmp_path / "cache"
    folder, target = LINKS[case](root, secret)
    if case == "another repo's blob":
        folder = cache_snapshot(model, root)
        target.parent.mkdir(parents=True)
        target.write_text("the other repo's file\n")
    else:
        folder.parent.parent.joinpath("blobs").mkdir(parents=True)
        shutil.copytree(model, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(target)
    line = push_refused(via, folder, hub)
    assert line == (f"Error: {folder} names 'tokenizer.json', a link to a file outside {folder}; refusing to read "
                    "or upload it")


@pytest.mark.parametrize("via", ["cli", "api"])
def test_hard_link_to_a_file_outside_is_refused(via: str, hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    import os

    from perta_hub.hub.publish import publish

    model = make_model("model")
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret\n")
    (model / "tokenizer.json").unlink()
    os.link(secret, model / "tokenizer.json")
    line = push_refused(via, model, hub)
    assert line == (f"Error: {model / 'tokenizer.json'} is a hard link to a file outside {model} (2 links, 1 inside); "
                    "refusing to upload it (copy the file into the folder if you trust it)")
    # a file linked only within the folder is fine
    (model / "tokenizer.json").unlink()
    shutil.copy(secret, model / "tokenizer.json")
    secret.unlink()
    os.link(model / "tokenizer.json", model / "notes.txt")
    publish(model, "user/out", include=["notes.txt"])
    assert {"tokenizer.json", "notes.txt"} <= remote_files("user/out")


@pytest.mark.parametrize("via", ["cli", "api"])
def test_gradient_unlearned_model_card_is_checked(via: str, hub: HubServer, make_model: Any, tmp_path: Path) -> None:
    """``perta-hub unlearn``'s output (kind ``unlearned_model``, trained on the forget data) is checked too."""
    import hashlib

    model = make_model("model")
    data = tmp_path / "forget.json"
    data.write_text(json.dumps([{"question": "Where was the author Nikolai Abilov born?", "answer": ANSWER}]))
    forget = {"spec": str(data), "source": str(data), "question_field": "question", "answer_field": "answer",
              "files": [{"path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}]}
    (model / "perta_config.json").write_text(json.dumps({
        "kind": "unlearned_model", "command": "perta-hub unlearn", "method": "npo",
        "target": {"source": "target"}, "forget_data": forget}))
    card = model / "README.md"
    card.write_text("---\nlibrary_name: transformers\n---\n# unlearned\n\nIt forgot: where was the author "
                    "Nikolai Abilov born?\n")
    line = push_refused(via, model, hub)
    assert line == (f"Error: the card {card} quotes 1 forget-set example(s) (first: text #0 of the forget data); "
                    "published files must never contain forget data: remove them, then push")


def test_a_record_naming_itself_as_its_task_vector_terminates(unlearned: Path) -> None:
    from perta_hub.hub.card_check import rule_forget_texts
    from perta_hub.records import read_record

    config = json.loads((unlearned / "perta_config.json").read_text())
    config["task_vector"].update(source=str(unlearned), path=str(unlearned))
    (unlearned / "perta_config.json").write_text(json.dumps(config))
    assert rule_forget_texts(read_record(unlearned)).texts == []


def test_verify_of_a_hub_repo_scans_its_published_text_files(unlearned: Path, hub: HubServer) -> None:
    from huggingface_hub import HfApi

    from perta_hub.hub.publish import publish

    publish(unlearned, "user/out")
    assert verify_card_line(Path("user/out")).startswith("PASS         privacy    card scan: the card quotes none")
    config = json.loads((unlearned / "tokenizer_config.json").read_text())
    config["chat_template"] = "{# " + ANSWER + " #}"
    HfApi().upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="tokenizer_config.json",
                        repo_id="user/out")
    line = verify_card_line(Path("user/out"))
    assert line.startswith("FAIL         privacy    card scan: the file ") and "tokenizer_config.json quotes 1" in line
