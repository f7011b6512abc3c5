"""Never PASS what was not checked, and the record cannot be edited to skip a check: the issue's case (a tensor
changed, the hashes rewritten, the kind relabelled as a training output) is NOT VERIFIED under --recompute (exit
3), and a relabelled record whose card still says what the output is FAILs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import ExitCode
from tests.helpers import load_state, rewrite_tensors, tree_digest
from tests.verify.attacks import record, rewrite_hashes, write_record

TENSOR = "model.layers.0.mlp.up_proj.weight"
#: the record of each training kind the model is relabelled as (the fields the kind needs)
TRAINING_KINDS = {
    "finetuned_model": lambda r: {"data_role": "training", "base": r["target"]},
    "unlearned_model": lambda r: {"method": "ga", "target": r["target"]},
}
CARD = "---\nlicense: mit\ntags:\n- fine-tuned\n---\n\n# A fine-tuned model\n"


def verify_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["verify", *args], catch_exceptions=False)


def lines_with(output: str, status: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(status)]


def relabel(folder: Path, target: Path, kind: str, *, card: bool) -> None:
    """The attack: put the target's tensor back (the forgetting undone), rewrite the hashes, relabel the kind as a
    training output (``card``: and replace the card with one of that kind)."""
    original = load_state(target)[TENSOR]
    rewrite_tensors(folder, "model", lambda state: {k: (original if k == TENSOR else v) for k, v in state.items()})
    rewrite_hashes(folder)
    old = record(folder)
    new = {"perta_hub_version": old["perta_hub_version"], "kind": kind, "command": old["command"],
           **TRAINING_KINDS[kind](old), "files": old["files"], "run_id": old["run_id"]}
    write_record(folder, new)
    if card:
        role = "base" if kind == "finetuned_model" else "target"
        (folder / "README.md").write_text(CARD + f"\n- {role}: `{old['target']['source']}` at "
                                          f"`{old['target']['revision']}`\n")


@pytest.mark.parametrize("kind", TRAINING_KINDS)
def test_relabelled_as_a_training_output_is_not_verified(kind: str, merged: dict[str, Path], model_copy: Path,
                                                         tmp_path: Path) -> None:
    relabel(model_copy, merged["target"], kind, card=True)
    before = tree_digest(model_copy)
    report = tmp_path / "audit.json"
    result = verify_cli(str(model_copy), "--recompute", "--no-privacy", "--report", str(report))
    assert result.exit_code == ExitCode.NOT_VERIFIED == 3, result.output
    what = kind.replace("_", " ")
    assert lines_with(result.output, "NOT VERIFIED") == [
        f"NOT VERIFIED provenance recompute: this {what} comes from training, which verify does not re-run, so its "
        "weights cannot be recomputed (verify what was made from it, such as its task vector)"]
    assert not lines_with(result.output, "FAIL")
    assert result.stdout.splitlines()[-1] == f"{model_copy} could NOT be verified (1 check(s) not verified)"
    audit = json.loads(report.read_text())
    assert (audit["outcome"], audit["exit_code"]) == ("unverified", 3)
    assert audit["summary"]["unverified"] == ["provenance recompute"] and not audit["summary"]["fail"]
    assert tree_digest(model_copy) == before

    from perta_hub.verification import verify

    assert verify(model_copy, recompute=True, privacy_level=False).exit_code == ExitCode.NOT_VERIFIED


def test_relabelled_record_disagrees_with_its_card(merged: dict[str, Path], model_copy: Path) -> None:
    relabel(model_copy, merged["target"], "finetuned_model", card=False)
    result = verify_cli(str(model_copy), "--no-privacy")
    assert result.exit_code == ExitCode.ERROR, result.output
    assert lines_with(result.output, "FAIL") == [
        "FAIL         integrity  card: the card is that of a model (tag unlearned-model) but perta_config.json says "
        "the kind is finetuned_model (1 more problem(s))"]


def test_a_kind_that_derives_from_forget_data_without_it_is_not_verified(merged: dict[str, Path]) -> None:
    """The privacy level is requested by default; a task vector whose forget data is unknown cannot be scanned."""
    result = verify_cli(str(merged["tv"]))
    assert result.exit_code == ExitCode.NOT_VERIFIED, result.output
    assert lines_with(result.output, "NOT VERIFIED") == [
        "NOT VERIFIED privacy    card scan: no forget data is recorded by the output or its inputs, so the card "
        "cannot be scanned for it (a task vector derives from forget data; --no-privacy verifies without this level)"]
    assert verify_cli(str(merged["tv"]), "--no-privacy").exit_code == ExitCode.OK


def test_a_requested_level_with_nothing_checked_is_not_verified() -> None:
    from perta_hub.verification.result import VerifyResult

    result = VerifyResult("out", kind="model", levels=["integrity", "privacy"])
    result.add("integrity", "file hashes", "pass", "10 files match")
    result.add("privacy", "weights private", "skipped", "a local folder")
    assert result.outcome == "pass"  # what the lines alone would say
    result.cover_levels()
    assert result.lines()[-2:] == [
        "NOT VERIFIED privacy    privacy: no privacy check could be made on this output (see the lines above)",
        "out could NOT be verified (1 check(s) not verified)"]
    assert result.exit_code == ExitCode.NOT_VERIFIED
