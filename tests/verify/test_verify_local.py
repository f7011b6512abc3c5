"""``perta-hub verify`` on local output folders: integrity, provenance (--recompute, --sample), the report,
and one failure line per kind of tampering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import ExitCode
from perta_hub.records import CONFIG_NAME


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def lines_with(output: str, status: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(status)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> dict[str, Path]:
    """A target, a task vector, a weight map (restricted with --params, w = 0 elsewhere) and the model, built once."""
    from perta_hub.demo.tiny import build_tiny_llama
    from perta_hub.importance.weight_map import compute_weights
    from perta_hub.merge.apply import apply
    from perta_hub.merge.task_vector import task_vector

    root = tmp_path_factory.mktemp("verify")
    target = build_tiny_llama(root / "target", tokenizer, seed=0, max_shard_size="40KB")
    tuned = build_tiny_llama(root / "tuned", tokenizer, seed=1, max_shard_size="40KB")
    tv = task_vector(target, tuned, root / "tv", dtype="bfloat16", max_shard_size="40KB", progress=False)
    wm = root / "wm"
    compute_weights(str(target), "tofu:forget01", "tofu:retain99", wm, method="grad", max_examples=4,
                    dtype="float32", device="cpu", params=r"mlp\.", progress=False, echo=lambda _line: None)
    model = apply(target, tv, alphas=[0.7], out_dir=root / "model", weights=wm, device="cpu",
                  max_shard_size="40KB", progress=False)[0]
    return {"target": target, "tuned": tuned, "tv": tv, "wm": wm, "model": model}


@pytest.fixture
def outputs(built: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The built outputs, with a private copy of the model to tamper with (its inputs are shared, unchanged)."""
    import shutil

    return {**built, "model": Path(shutil.copytree(built["model"], tmp_path / "model"))}


def test_outputs_record_their_files(outputs: dict[str, Path]) -> None:
    from perta_hub.verification.sources import sha256_of

    for key in ("tv", "wm", "model"):
        record = json.loads((outputs[key] / CONFIG_NAME).read_text())
        files = record["files"]
        assert list(record)[-2:] == ["files", "run_id"]
        shards = sorted(p.name for p in outputs[key].glob("*.safetensors"))
        assert len(shards) > 1 and set(shards) <= set(files)
        assert all(sha256_of(outputs[key] / n) == sha for n, sha in files.items())
    assert "config.json" in json.loads((outputs["model"] / CONFIG_NAME).read_text())["files"]


def test_recompute_passes_for_model_task_vector_and_weight_map(outputs: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "audit.json"
    result = run_cli("verify", str(outputs["model"]), "--recompute", "--report", str(report))
    assert result.exit_code == 0, result.output
    assert not lines_with(result.output, "FAIL") and not lines_with(result.output, "NOT VERIFIED")
    assert any("provenance tensors: every tensor recomputed as theta - 0.7 * (w ⊙ tau): bit for bit" in line
               for line in lines_with(result.output, "PASS")), result.output
    # local inputs are not published: said, never counted as a pass
    assert any("task vector private" in line and "local folder" in line
               for line in lines_with(result.output, "NOT CHECKED"))
    audit = json.loads(report.read_text())
    assert audit["outcome"] == "pass" and audit["subject"]["kind"] == "model"
    assert audit["levels"] == ["integrity", "provenance", "privacy"]
    assert audit["inputs"]["task_vector"]["revision"].startswith("sha256:")
    assert audit["files"] == json.loads((outputs["model"] / CONFIG_NAME).read_text())["files"]
    assert audit["perta_hub_version"] and audit["checked_at"]

    result = run_cli("verify", str(outputs["tv"]), "--recompute", "--no-privacy")  # no forget data recorded
    assert result.exit_code == 0, result.output
    assert "(finetuned - base) in float32 cast to bfloat16" in result.output
    # a weight map's importances come from gradient passes: recombined and checked, but never passed as recomputed
    result = run_cli("verify", str(outputs["wm"]), "--recompute")
    assert result.exit_code == ExitCode.NOT_VERIFIED == 3, result.output
    assert "recombine into w" in result.output
    assert lines_with(result.output, "NOT VERIFIED") == [
        "NOT VERIFIED provenance importances: not recomputed: the stored importances come from gradient passes over "
        "the forget and retain data, which verify does not re-run (verify the unlearned model made from this map, "
        "or re-run compute-weights with the recorded command to compare)"]


def test_sample_is_seeded_and_recorded(outputs: dict[str, Path], tmp_path: Path) -> None:
    from perta_hub.verification import verify

    first = verify(outputs["model"], sample=3, seed=7, privacy_level=False)
    again = verify(outputs["model"], sample=3, seed=7, privacy_level=False, report=tmp_path / "r.json")
    assert first.ok and first.sample == again.sample and len(first.sample["tensors"]) == 3
    assert json.loads((tmp_path / "r.json").read_text())["sample"] == {"n": 3, "seed": 7,
                                                                     "tensors": first.sample["tensors"]}
    assert "3 of" in next(c.detail for c in first.checks if c.name == "tensors")


def test_flipped_bit_names_file_and_tensor(outputs: dict[str, Path]) -> None:
    from perta_hub.io.reader import open_checkpoint

    model = outputs["model"]
    ckpt = open_checkpoint(model)
    name = "model.layers.1.mlp.up_proj.weight"
    entry = ckpt.entries[name]
    data = bytearray(entry.file.read_bytes())
    data[entry.offset + 4 * 10 + 2] ^= 0x01  # one bit of element 10 (fp32)
    entry.file.write_bytes(bytes(data))
    result = run_cli("verify", str(model), "--recompute")
    assert result.exit_code == 1
    fails = lines_with(result.output, "FAIL")
    assert any(f"file hashes: {entry.file.name}: sha256" in line for line in fails), result.output
    assert any(f"tensors: {name} differs in 1 of" in line and "first at flat index 10" in line for line in fails)
    assert result.output.strip().splitlines()[-1].startswith(f"verification of {model} FAILED")


def test_card_alpha_changed(outputs: dict[str, Path]) -> None:
    card = outputs["model"] / "README.md"
    card.write_text(card.read_text().replace("alpha = 0.7", "alpha = 1.0"))
    result = run_cli("verify", str(outputs["model"]))
    assert result.exit_code == 1
    assert lines_with(result.output, "FAIL") == [
        "FAIL         integrity  card: the card says alpha = 1.0 but perta_config.json says 0.7"]


def test_record_pointing_at_another_input(outputs: dict[str, Path], make_model: Any, tmp_path: Path) -> None:
    from perta_hub.merge.task_vector import task_vector

    other = task_vector(outputs["target"], make_model("tuned2", seed=2), tmp_path / "tv2", dtype="bfloat16",
                        max_shard_size="40KB", progress=False)
    path = outputs["model"] / CONFIG_NAME
    config = json.loads(path.read_text())
    config["task_vector"].update(source=str(other), path=str(other))
    path.write_text(json.dumps(config, indent=2))
    result = run_cli("verify", str(outputs["model"]), "--recompute", "--no-privacy")
    assert result.exit_code == 1
    fails = lines_with(result.output, "FAIL")
    assert any(line.startswith("FAIL         provenance task_vector input:") and "content hash" in line
               for line in fails), result.output
    assert any("provenance tensors:" in line and "differs in" in line for line in fails)
    assert any("integrity  card: the card names the task vector as" in line for line in fails)


def test_branch_revision_is_not_pinned(outputs: dict[str, Path]) -> None:
    path = outputs["model"] / CONFIG_NAME
    config = json.loads(path.read_text())
    config["target"].update(repo_id="org/llama", revision="main")
    path.write_text(json.dumps(config, indent=2))
    result = run_cli("verify", str(outputs["model"]), "--no-privacy")
    assert result.exit_code == 1
    assert any("inputs pinned: the target org/llama is recorded at 'main', a branch or tag, not a commit sha" in line
               for line in lines_with(result.output, "FAIL")), result.output


def test_missing_input_is_not_verified(outputs: dict[str, Path], tmp_path: Path) -> None:
    path = outputs["model"] / CONFIG_NAME
    config = json.loads(path.read_text())
    gone = tmp_path / "moved-away"
    card = outputs["model"] / "README.md"
    card.write_text(card.read_text().replace(f"`{config['task_vector']['source']}`", f"`{gone}`"))
    config["task_vector"].update(source=str(gone), path=str(gone))
    path.write_text(json.dumps(config, indent=2))
    result = run_cli("verify", str(outputs["model"]), "--recompute", "--no-privacy")
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert lines_with(result.output, "NOT VERIFIED")[0] == (
        f"NOT VERIFIED provenance task_vector input: cannot find {gone}: it is not there, and no folder searched by "
        f"content hash holds its content {config['task_vector']['revision']} (searched: {tmp_path}); pass --search "
        "DIR where it now is")
    assert "provenance tensors: not recomputed" in result.output
    assert not any("provenance tensors" in line for line in lines_with(result.output, "PASS")), result.output


def test_not_an_output_and_unrecorded_hashes(make_model: Any, tmp_path: Path) -> None:
    plain = make_model("plain")
    result = run_cli("verify", str(plain), "--report", str(tmp_path / "r.json"))
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert lines_with(result.output, "NOT VERIFIED") == [
        f"NOT VERIFIED integrity  record: {plain} cannot be verified: {plain} is not a perta-hub output "
        "(no perta_config.json)"]
    assert json.loads((tmp_path / "r.json").read_text())["outcome"] == "unverified"


def test_extra_shard_and_index_mismatch(outputs: dict[str, Path]) -> None:
    model = outputs["model"]
    shard = sorted(model.glob("model-*.safetensors"))[-1]
    shard.rename(model / "model-99999-of-99999.safetensors")
    result = run_cli("verify", str(model), "--no-privacy")
    assert result.exit_code == 1
    fails = lines_with(result.output, "FAIL")
    assert any(f"file hashes: {shard.name} is recorded but missing" in line for line in fails), result.output
    assert any(f"indexes: model.safetensors.index.json names {shard.name}, which is not present" in line
               for line in fails)
