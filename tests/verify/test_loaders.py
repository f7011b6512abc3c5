"""What a loader loads is what is verified: every weight file transformers, peft or safetensors would pick up is
one the checks cover, or a FAIL naming it; files outside the record are a FAIL, or listed when harmless.

Each case tampers with a copy of a merged model (and, where the attacker would, rewrites the recorded hashes),
then runs the real CLI: the exact line, the exit status, and the folder left as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import ExitCode
from tests.helpers import load_state, tree_digest
from tests.hub_server import HubServer
from tests.verify.attacks import record, rewrite_hashes


def verify_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["verify", *args], catch_exceptions=False)


def lines_with(output: str, status: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(status)]


def single_file_of(folder: Path, source: Path) -> None:
    """``folder/model.safetensors`` holding every tensor of ``source`` (one file, as from_pretrained saves it)."""
    from safetensors.torch import save_file

    save_file(load_state(source), folder / "model.safetensors", metadata={"format": "pt"})


def test_single_file_beside_the_index_fails_and_is_what_transformers_loads(
        merged: dict[str, Path], model_copy: Path) -> None:
    """The issue's case: the target's weights as model.safetensors beside the sharded index, hashes rewritten."""
    import torch
    from transformers import AutoModelForCausalLM

    single_file_of(model_copy, merged["target"])
    rewrite_hashes(model_copy)
    name = "model.layers.0.mlp.up_proj.weight"
    loaded = AutoModelForCausalLM.from_pretrained(model_copy).state_dict()[name]
    assert torch.equal(loaded, load_state(merged["target"])[name])  # transformers 5 loads model.safetensors
    assert not torch.equal(loaded, load_state(merged["model"])[name])  # not the verified shards
    before = tree_digest(model_copy)
    result = verify_cli(str(model_copy), "--recompute", "--no-privacy")
    assert result.exit_code == ExitCode.ERROR, result.output
    assert lines_with(result.output, "FAIL") == [
        "FAIL         integrity  weight files: model.safetensors is not one of the model's checked files: "
        "AutoModelForCausalLM.from_pretrained loads it instead of the shards model.safetensors.index.json names, "
        "which are what verify checks; remove it, or re-create the output"]
    assert "PASS         provenance tensors: every tensor recomputed" in result.output  # the shards themselves
    assert tree_digest(model_copy) == before


def _pickle(folder: Path, source: Path) -> None:
    import torch

    torch.save(load_state(source), folder / "pytorch_model.bin")


def _adapter(folder: Path, source: Path) -> None:
    from safetensors.torch import save_file

    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 1}))
    save_file({"x": load_state(source)["model.norm.weight"]}, folder / "adapter_model.safetensors")


def _redirect(folder: Path, source: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["transformers_weights"] = "model-00001-of-00004.safetensors"
    (folder / "config.json").write_text(json.dumps(config))


def _stray_shard(folder: Path, source: Path) -> None:
    (folder / "model-00005-of-00005.safetensors").write_bytes((source / "model-00001-of-00004.safetensors").read_bytes())


WHY = "is not one of the model's checked files:"
LOADER_CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "a pickle checkpoint": (_pickle, f"pytorch_model.bin {WHY} AutoModelForCausalLM.from_pretrained loads it when no "
                                     "safetensors model is present, or with use_safetensors=False; remove it, or "
                                     "re-create the output"),
    "a peft adapter": (_adapter, f"adapter_model.safetensors {WHY} transformers and peft load it as an adapter on top "
                                 "of the model; remove it, or re-create the output (1 more problem(s))"),
    "a config redirecting the loader": (_redirect, "config.json sets transformers_weights = "
                                                   "'model-00001-of-00004.safetensors': from_pretrained loads that "
                                                   "instead of the checked weights"),
    "a shard no index names": (_stray_shard, f"model-00005-of-00005.safetensors {WHY} no index of the output names "
                                             "it, and safetensors loads it by name; remove it, or re-create the output"),
}


@pytest.mark.parametrize("case", LOADER_CASES)
def test_every_file_a_loader_picks_up_is_checked(case: str, merged: dict[str, Path], model_copy: Path) -> None:
    add, message = LOADER_CASES[case]
    add(model_copy, merged["target"])
    rewrite_hashes(model_copy)  # the record agrees with the files: only the loader's view can tell
    before = tree_digest(model_copy)
    result = verify_cli(str(model_copy), "--no-privacy")
    assert result.exit_code == ExitCode.ERROR, result.output
    assert lines_with(result.output, "FAIL") == [f"FAIL         integrity  weight files: {message}"]
    assert tree_digest(model_copy) == before


UNRECORDED_CASES = {
    "code": ("modeling_llama_evil.py", "import os\n",
             "modeling_llama_evil.py is code that is not in the record's files"),
    "a config with auto_map": ("processor_config.json", json.dumps({"auto_map": {"AutoProcessor": "x.Processor"}}),
                               "processor_config.json is a config with auto_map (custom code run with "
                               "trust_remote_code=True) that is not in the record's files"),
    "a weight file in a subfolder": ("extra/weights.safetensors", "",
                                     "extra/weights.safetensors is present but not in the record's files"),
    "a file of unknown kind": ("data.csv", "a,b\n", "data.csv is not in the record's files and is not of a kind "
                                                    "known to be harmless (card, tokenizer, generation config)"),
}


@pytest.mark.parametrize("case", UNRECORDED_CASES)
def test_an_unrecorded_file_fails(case: str, model_copy: Path) -> None:
    name, text, message = UNRECORDED_CASES[case]
    (model_copy / name).parent.mkdir(exist_ok=True)
    (model_copy / name).write_text(text)
    before = tree_digest(model_copy)
    result = verify_cli(str(model_copy), "--no-privacy")
    assert result.exit_code == ExitCode.ERROR, result.output
    assert lines_with(result.output, "FAIL") == [f"FAIL         integrity  unrecorded files: {message}"]
    assert tree_digest(model_copy) == before


def test_harmless_unrecorded_files_are_listed(model_copy: Path) -> None:
    (model_copy / "NOTES.md").write_text("notes\n")
    (model_copy / "LICENSE").write_text("MIT\n")
    result = verify_cli(str(model_copy), "--no-privacy")
    assert result.exit_code == ExitCode.OK, result.output
    assert ("PASS         integrity  unrecorded files: 2 file(s) not recorded, all of harmless kinds: LICENSE, "
            "NOTES.md") in result.output.splitlines()


def test_recorded_custom_code_is_not_verified(model_copy: Path) -> None:
    (model_copy / "modeling_llama_evil.py").write_text("import os\n")
    rewrite_hashes(model_copy)
    result = verify_cli(str(model_copy), "--no-privacy")
    assert result.exit_code == ExitCode.NOT_VERIFIED, result.output
    assert lines_with(result.output, "NOT VERIFIED") == [
        "NOT VERIFIED integrity  custom code: modeling_llama_evil.py is custom code a loader runs with "
        "trust_remote_code=True (1 file(s)); verify cannot check what it loads"]


def test_hub_repo_with_a_single_file_beside_the_index_fails(hub: HubServer, merged: dict[str, Path],
                                                            model_copy: Path) -> None:
    from huggingface_hub import HfApi

    push = CliRunner().invoke(main, ["push", str(model_copy), "user/model"], catch_exceptions=False)
    assert push.exit_code == 0, push.output
    assert verify_cli("user/model", "--no-privacy").exit_code == ExitCode.OK
    single_file_of(model_copy, merged["target"])
    rewrite_hashes(model_copy)
    data = record(model_copy)
    api = HfApi()
    api.create_branch("user/model", branch="single")
    api.upload_file(path_or_fileobj=model_copy / "model.safetensors", path_in_repo="model.safetensors",
                    repo_id="user/model", revision="single")
    api.upload_file(path_or_fileobj=json.dumps(data, indent=2).encode(), path_in_repo="perta_config.json",
                    repo_id="user/model", revision="single")
    refs = dict(hub.repo("user/model").refs)
    result = verify_cli("user/model@single", "--no-privacy")
    assert result.exit_code == ExitCode.ERROR, result.output
    assert lines_with(result.output, "FAIL") == [
        "FAIL         integrity  weight files: model.safetensors is not one of the model's checked files: "
        "AutoModelForCausalLM.from_pretrained loads it instead of the shards model.safetensors.index.json names, "
        "which are what verify checks; remove it, or re-create the output"]
    assert hub.repo("user/model").refs == refs  # verify published nothing
