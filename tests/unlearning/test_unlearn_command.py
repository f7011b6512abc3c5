"""perta-hub unlearn on a tiny Llama: GA raises the forget NLL, GradDiff/NPO records, dtype, bad input."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from perta_hub.cli import main
from tests.conftest import tofu_rows

FAST = ["--lr", "3e-3", "--batch-size", "4", "--grad-accum", "1", "--warmup", "0", "--device", "cpu",
        "--max-shard-size", "40KB", "-q"]


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    paths = {"forget": tmp_path / "forget.json", "retain": tmp_path / "retain.json"}
    paths["forget"].write_text(json.dumps(tofu_rows("forget01")[:8]))
    paths["retain"].write_text(json.dumps(tofu_rows("retain_perturbed")[:8]))
    return paths


def _run(args: list) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _fails(args: list, *patterns: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for pattern in patterns:
        assert pattern in errors[0], errors[0]
    return errors[0]


def _nll(model_dir: Path, rows: list[dict]) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from perta_hub.data.encoding import collate, encode_qa

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = collate([encode_qa(tok, r["question"], r["answer"]) for r in rows], tok.pad_token_id)
    with torch.no_grad():
        return float(model(**batch).loss)


def test_ga_steps_raise_the_forget_nll_and_keep_the_dtype(tmp_path, make_model, data):
    base = make_model("base", dtype="bfloat16")
    out = tmp_path / "ga"
    line = _run(["unlearn", base, "--method", "ga", "--forget", data["forget"], "-o", out, "--epochs", "3", *FAST])
    assert "GradAscent, 6 steps" in line and "last-epoch loss" in line, line
    rows = tofu_rows("forget01")[:8]
    assert _nll(out, rows) > _nll(base, rows) + 0.2  # 6 steps of lr 3e-3: about +0.4 nats per token
    cfg = json.loads((out / "perta_config.json").read_text())
    assert cfg["kind"] == "unlearned_model" and cfg["method"] == "ga" and cfg["dtype"] == "bfloat16"
    assert cfg["training"]["epochs"] == 3.0 and cfg["training"]["effective_batch"] == 4
    assert cfg["results"]["final_loss"] == cfg["results"]["loss_history"][-1]["loss"]
    from safetensors import safe_open

    shards = sorted(out.glob("model*.safetensors"))
    for shard in shards:
        with safe_open(shard, "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "BF16" for k in f.keys())  # noqa: SIM118 (safe_open is no dict)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in shards}
    assert len(modes) == 1, modes
    card = (out / "README.md").read_text()
    assert "GradAscent" in card and rows[0]["answer"] not in card
    # the same command again: nothing trained
    assert "already holds this run" in _run(["unlearn", base, "--method", "ga", "--forget", data["forget"], "-o", out,
                                              "--epochs", "3", *FAST])
    from perta_hub.records import UnlearnedModelRecord, read_record

    assert isinstance(read_record(out), UnlearnedModelRecord)
    # perta-hub verify: the record, the files' hashes and the card agree
    assert "every requested check passed" in _run(["verify", out])


def test_graddiff_and_npo_record_their_weights(tmp_path, make_model, data):
    base = make_model("base")
    from perta_hub.unlearning import unlearn

    gd = unlearn(base, str(data["forget"]), tmp_path / "gd", method="gd", retain=str(data["retain"]), gamma=0.5,
                 max_steps=2, lr=1e-3, batch_size=4, grad_accum=1, warmup=0.0, device="cpu", progress=False,
                 echo=lambda _l: None)
    cfg = json.loads((gd.out_dir / "perta_config.json").read_text())
    assert cfg["hyperparameters"]["gamma"] == 0.5 and cfg["hyperparameters"]["retain_weight"] == 1.0
    assert cfg["retain_data"]["num_examples"] == 8 and gd.steps == 2
    npo = unlearn(base, str(data["forget"]), tmp_path / "npo", method="npo", beta=0.2, max_steps=2, lr=1e-3,
                  batch_size=4, grad_accum=1, warmup=0.0, device="cpu", progress=False, echo=lambda _l: None)
    cfg = json.loads((npo.out_dir / "perta_config.json").read_text())
    h = cfg["hyperparameters"]
    assert h["beta"] == 0.2 and h["retain_weight"] == 0.0 and cfg["retain_data"] is None
    # NPO starts at the reference: the first logged loss is close to 2/beta*log 2 (one step of lr 1e-3 moved it)
    assert npo.final_loss < 2 / 0.2 * 0.6932 + 1.0


def test_defaults_are_the_reference_frameworks():
    from perta_hub.options.training import UnlearnTrainingOptions
    from perta_hub.options.unlearn import UNLEARN

    t = UnlearnTrainingOptions()
    assert (t.epochs, t.lr, t.weight_decay, t.warmup) == (10.0, 1e-5, 0.01, None)  # None: 1 epoch, <= 10% of steps
    assert (UNLEARN.gamma, UNLEARN.beta, UNLEARN.retain_weight) == (1.0, 0.1, None)


def test_the_default_warmup_never_fills_a_short_run():
    """One epoch, at most 10% of the optimizer steps: forget01 (40 rows, effective batch 32) for 1 epoch is 2 steps and
    no warmup (it was 2 steps, both warmup); for the reference's 10 epochs it is its 1 epoch (2 of 20 steps). A
    --warmup given is honoured as it is."""
    from perta_hub.options.training import UnlearnTrainingOptions
    from perta_hub.training.run import plan_steps

    def plan(**options: float) -> tuple[int, int]:
        p = plan_steps(len(tofu_rows("forget01")), UnlearnTrainingOptions(**options), 1)
        return p["warmup_steps"], p["total_steps"]

    assert plan(epochs=1) == (0, 2)
    assert plan(epochs=5) == (1, 10)
    assert plan() == (2, 20)
    assert plan(epochs=1, warmup=1.0) == (2, 2)  # asked for: every step is warmup


def test_one_epoch_of_forget01_at_the_defaults_trains_at_a_non_zero_lr(tmp_path, make_model):
    """Every optimizer step of a 1-epoch forget01 run at the default batch and warmup has lr > 0 (with the old
    1-epoch warmup the first of its 2 steps had lr 0 and the second half the peak)."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from perta_hub.unlearning.command import unlearn

    base = make_model("base")
    lrs: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    try:
        result = unlearn(base, "tofu:forget01", tmp_path / "ga", method="ga", epochs=1, device="cpu", progress=False,
                         echo=lambda _line: None)
    finally:
        handle.remove()
    training = json.loads((tmp_path / "ga" / "perta_config.json").read_text())["training"]
    assert (training["total_steps"], training["warmup_steps"], training["effective_batch"]) == (2, 0, 32)
    assert result.steps == 2 and lrs == [1e-5, 5e-6], lrs


def test_bad_input_is_one_clear_line(tmp_path, make_model, data):
    base = make_model("base")
    out = tmp_path / "out"
    f, r = data["forget"], data["retain"]
    _fails(["unlearn", base, "--method", "gd", "--forget", f, "-o", out], "needs --retain")
    _fails(["unlearn", base, "--method", "ga", "--forget", f, "--retain", r, "-o", out], "only the forget data")
    _fails(["unlearn", base, "--method", "gd", "--forget", f, "--retain", r, "--beta", "0.5", "-o", out],
           "--beta only applies")
    _fails(["unlearn", base, "--method", "npo", "--forget", f, "--retain-weight", "2", "-o", out],
           "--retain-weight only applies with --retain")
    _fails(["unlearn", base, "--method", "npo", "--forget", f, "-o", out, "--lora-rank", "2"], "not supported")
    _fails(["unlearn", base, "--method", "npo", "--forget", f, "-o", out, "--epochs", "1", "--warmup", "2"],
           "longer than")
    no_answer = tmp_path / "no_answer.json"
    no_answer.write_text(json.dumps([{"question": x["question"], "response": x["answer"]}
                                     for x in tofu_rows("forget01")[:3]]))
    _fails(["unlearn", base, "--method", "ga", "--forget", no_answer, "-o", out, *FAST], "forget data",
           "no field 'answer'")
    _fails(["unlearn", base, "--method", "gd", "--forget", f, "--retain", no_answer, "-o", out, *FAST],
           "retain data")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(["unlearn", empty, "--method", "ga", "--forget", f, "-o", out, *FAST], "holds no safetensors weights")
    result = CliRunner().invoke(main, ["unlearn", str(base), "--method", "xx", "--forget", str(f), "-o", str(out)])
    assert result.exit_code == 2 and "xx" in result.output
    assert not out.exists()
