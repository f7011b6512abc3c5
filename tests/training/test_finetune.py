"""finetune and task-vector MODEL --forget DATA: training on a tiny Llama, artifacts, LoRA, accelerate, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.options.training import TrainingOptions
from perta_hub.training.run import plan_steps
from tests.conftest import tofu_rows
from tests.helpers import accelerate_launch, load_state

# small, fast recipes: a high learning rate so that a few steps visibly lower the loss
FAST = ["--lr", "3e-3", "--batch-size", "4", "--grad-accum", "1", "--warmup", "0", "--device", "cpu",
        "--max-shard-size", "40KB"]


@pytest.fixture
def forget_file(tmp_path: Path) -> Path:
    """Eight TOFU forget01 rows as a JSON file."""
    path = tmp_path / "forget.json"
    path.write_text(json.dumps(tofu_rows("forget01")[:8]))
    return path


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _fails(args: list[str], *patterns: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]  # status lines may come before it
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in result.stderr, result.stderr
    for pattern in patterns:
        assert pattern in errors[0], errors[0]
    return errors[0]


def _forget_loss(model_dir: Path, rows: list[dict]) -> float:
    """Mean NLL per answer token of ``rows`` under the model in ``model_dir`` (the package's formatting)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from perta_hub.data.encoding import collate, encode_qa

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = collate([encode_qa(tok, r["question"], r["answer"]) for r in rows], tok.pad_token_id)
    with torch.no_grad():
        return float(model(**batch).loss)


def _config(folder: Path) -> dict:
    return json.loads((folder / "perta_config.json").read_text())


def test_plan_steps_gives_an_effective_batch_of_32():
    plan = plan_steps(40, TrainingOptions(), 1)  # batch 4 -> 8 accumulation steps
    assert plan == {"grad_accum": 8, "effective_batch": 32, "steps_per_epoch": 2, "total_steps": 10, "warmup_steps": 2}
    two = plan_steps(40, TrainingOptions(), 2)  # 4 x 4 x 2 processes
    assert (two["grad_accum"], two["effective_batch"], two["steps_per_epoch"]) == (4, 32, 2)
    odd = plan_steps(400, TrainingOptions(batch_size=5, warmup=0.5, epochs=3), 1)
    assert (odd["grad_accum"], odd["effective_batch"]) == (7, 35)  # rounded up to at least 32
    assert odd["steps_per_epoch"] == 12 and odd["total_steps"] == 36 and odd["warmup_steps"] == 6
    assert plan_steps(40, TrainingOptions(max_steps=3), 1)["total_steps"] == 3


def test_finetune_lowers_the_forget_loss_and_reloads(tmp_path, make_model, forget_file):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = make_model("base")
    out = tmp_path / "ft"
    args = ["finetune", base, "--data", forget_file, "-o", out, "--epochs", "5", *FAST]
    printed = _run(args)
    assert "finetune: 10 steps (effective batch 4) on 8 examples" in printed and "tokens/s" in printed
    # Trainer logs: one readable line per epoch off a terminal, never a raw log dict or the Trainer's bar
    assert "{'" not in printed and "/10 [" not in printed, printed
    assert sum(line.startswith("finetune: step ") and ": loss " in line for line in printed.splitlines()) == 5

    rows = tofu_rows("forget01")[:8]
    before, after = _forget_loss(base, rows), _forget_loss(out, rows)
    assert after < before - 0.2, (before, after)

    model = AutoModelForCausalLM.from_pretrained(out)  # a plain transformers checkpoint
    assert model.num_parameters() == AutoModelForCausalLM.from_pretrained(base).num_parameters()
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(base).chat_template
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 1

    cfg = _config(out)
    assert cfg["kind"] == "finetuned_model" and cfg["lora_rank"] is None
    assert cfg["base"]["source"] == str(base) and cfg["base"]["revision"].startswith("sha256:")
    assert cfg["data"]["num_examples"] == 8 and cfg["data"]["num_answer_tokens"] > 0
    # the data's identity: the absolute path and sha256 of the file read
    resolved = str(forget_file.resolve())
    assert cfg["data"]["source"] == resolved
    assert cfg["data"]["files"] == [{"path": resolved, "sha256": hashlib.sha256(forget_file.read_bytes()).hexdigest()}]
    training = cfg["training"]
    assert (training["epochs"], training["lr"], training["weight_decay"], training["effective_batch"]) == (5, 3e-3, 0.01, 4)
    assert training["total_steps"] == 10 and cfg["results"]["steps"] == 10
    assert cfg["results"]["tokens"] == 5 * cfg["data"]["num_tokens"]  # every token of every epoch, no padding
    losses = [h["loss"] for h in cfg["results"]["loss_history"]]
    assert len(losses) == 5 and losses[-1] < losses[0]
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "| `lr` | `0.003` |" in card
    # what was trained on what: no forget-data wording or privacy default for a plain fine-tune (issue 13)
    assert cfg["data_role"] == "training" and "# Fine-tuned model" in card and "Data note" in card
    assert "Forget-set" not in card and "task-vector THIS_REPO --forget" in card
    # the last epoch's loss, and the base's dtype (float32 here), every weight file with the same mode
    assert cfg["results"]["train_loss"] == losses[-1] and cfg["training"]["save_dtype"] == "float32"
    assert len({p.stat().st_mode for p in out.glob("model*.safetensors*")}) == 1
    from perta_hub.cards.render import find_forget_examples, hub_metadata_problems

    assert hub_metadata_problems(card) == []
    assert find_forget_examples(card, [t for r in tofu_rows("forget01")[:8] for t in r.values()]) == []

    # the same command again: the folder already holds this run, nothing is trained
    assert "already holds this run" in _run(args)
    # another recipe into the same folder, or a folder holding other files: refused, nothing touched
    _fails(["finetune", base, "--data", forget_file, "-o", out, "--epochs", "1", *FAST], "another fine-tuning run")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    _fails(["finetune", base, "--data", forget_file, "-o", other, *FAST], "already holds other files")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_task_vector_from_forget_data_is_finetuned_minus_base(tmp_path, make_model, forget_file):
    base = make_model("base")
    out, kept = tmp_path / "tv", tmp_path / "ft"
    printed = _run(["task-vector", base, "--forget", forget_file, "-o", out, "--finetuned-dir", kept,
                    "--max-steps", "2", *FAST])
    assert f"task vector written to {out}" in printed
    tau, b, f = load_state(out, "task_vector"), load_state(base), load_state(kept)
    assert set(tau) == set(b) == set(f)
    for name in b:
        torch.testing.assert_close(tau[name], f[name] - b[name], rtol=0, atol=0)
    assert any(float(t.abs().max()) > 0 for t in tau.values())

    # the model task-vector fine-tuned on the forget data says so, and is private by default on push
    assert _config(kept)["data_role"] == "forget" and "Privacy note" in (kept / "README.md").read_text()
    from perta_hub.hub.publish import resolve_private

    assert resolve_private(kept, None) is True and resolve_private(base, None) is None
    cfg = _config(out)
    assert cfg["kind"] == "task_vector" and cfg["method"] == "full" and cfg["finetuned_kept"] is True
    assert cfg["base"]["source"] == str(base) and cfg["finetuned"]["source"] == str(kept)
    assert cfg["finetuned"]["revision"].startswith("sha256:")
    assert cfg["training"]["max_steps"] == 2 and cfg["forget_data"]["num_examples"] == 8
    assert cfg["training_results"]["steps"] == 2


def test_task_vector_from_forget_data_of_a_tied_model(tmp_path, make_model, forget_file):
    """A tied bf16 model (SmolLM2, Llama-3.2-1B...): the fine-tuned copy is saved tied, so the pair fits."""
    base = make_model("base", dtype="bfloat16", tie_word_embeddings=True)  # saved in bf16: cast copies untie
    out, kept = tmp_path / "tv", tmp_path / "ft"
    _run(["task-vector", base, "--forget", forget_file, "-o", out, "--finetuned-dir", kept, "--max-steps", "2", *FAST])
    tau, b, f = load_state(out, "task_vector"), load_state(base), load_state(kept)
    assert "lm_head.weight" not in b and set(tau) == set(b) == set(f)
    name = "model.embed_tokens.weight"
    torch.testing.assert_close(tau[name], f[name].float() - b[name].float(), rtol=0, atol=0)


def test_lora_task_vector_is_zero_outside_adapted_modules(tmp_path, make_model, forget_file):
    from transformers import AutoModelForCausalLM

    base = make_model("base")
    out = tmp_path / "tv"
    args = ["task-vector", base, "--forget", forget_file, "-o", out, "--lora-rank", "4", "--lora-targets",
            "q_proj,v_proj", "--max-steps", "2", *FAST]
    _run(args)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # temporary model deleted
    # the same command again finds its finished artifact (no training); another recipe is refused before training
    assert "already holds this task vector" in _run(args)
    _fails([*args, "--seed", "1"], "already holds another task vector")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    from perta_hub.io.artifacts import load_artifact
    from perta_hub.merge.low_rank import open_task_vector

    assert not list(out.glob("task_vector*"))  # the LoRA factors are stored, not the dense delta
    shapes = {n: tuple(t.shape) for n, t in load_state(base).items()}
    view = open_task_vector(load_artifact(out, "task_vector"), shapes)
    tau = {n: view.get(n) for n in view.names}  # formed as apply forms them
    assert set(tau) == set(shapes)  # the full tensor set: apply does not care
    adapted = {n for n in tau if n.endswith(("q_proj.weight", "v_proj.weight"))}
    assert len(adapted) == 4
    for name, t in tau.items():
        if name in adapted:
            assert float(t.abs().max()) > 0, name
            assert int(torch.linalg.matrix_rank(t)) <= 4, name
        else:
            assert not bool(t.any()), name
    cfg = _config(out)
    assert cfg["lora_rank"] == 4 and cfg["lora"]["rank"] == 4 and cfg["lora"]["alpha"] == 8.0
    assert sorted(cfg["lora"]["adapted_tensors"]) == sorted(adapted)
    assert cfg["finetuned"]["temporary"] is True and cfg["finetuned_kept"] is False

    # finetune --lora-rank: the merged model reloads, and its difference from the base is the LoRA delta
    ft, tv2 = tmp_path / "ft-lora", tmp_path / "tv2"
    _run(["finetune", base, "--data", forget_file, "-o", ft, "--lora-rank", "2", "--max-steps", "2", *FAST])
    assert _config(ft)["lora_rank"] == 2 and (ft / "adapter" / "adapter_model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(ft)
    from perta_hub.merge.lora_delta import lora_task_vector

    lora_task_vector(base, ft / "adapter", tv2, low_rank=False, progress=False)
    tau2, b, f = load_state(tv2, "task_vector"), load_state(base), load_state(ft)
    for name in b:
        torch.testing.assert_close(tau2[name], f[name] - b[name], rtol=0, atol=1e-6)
    assert sum(bool(t.any()) for t in tau2.values()) == 14  # all-linear: 7 linear layers x 2 decoder layers


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path, make_model, tofu_dir):
    from transformers import AutoModelForCausalLM

    base = make_model("base")
    data = ["locuslab/TOFU:forget01", "--data-dir", tofu_dir]
    # the command as documented: `accelerate launch --num_processes 2 --cpu` (accelerate runs one CPU process
    # unless MPI is set up; the command says so and trains with the same recipe)
    out = tmp_path / "cpu"
    proc = accelerate_launch(["--cpu", "--num_processes", "2"],
                       ["finetune", base, "--data", *data, "-o", out, "--max-steps", "1", *FAST], tmp_path)
    assert "model in" in proc.stdout
    AutoModelForCausalLM.from_pretrained(out)
    # two real processes on the CPU (torchrun + gloo): data-parallel Trainer, one folder written by rank 0
    tv, kept = tmp_path / "tv", tmp_path / "ft2"
    proc = accelerate_launch(["--multi_gpu", "--num_processes", "2"],
                       ["task-vector", base, "--forget", *data, "-o", tv, "--finetuned-dir", kept,
                        "--max-steps", "1", "--batch-size", "2", "--grad-accum", "2", *FAST[6:]], tmp_path)
    assert proc.stdout.count("task vector written to") == 1, proc.stdout
    cfg = _config(kept)
    assert cfg["training"]["num_processes"] == 2 and cfg["training"]["effective_batch"] == 8
    assert AutoModelForCausalLM.from_pretrained(kept).num_parameters() > 0
    tau, b, f = load_state(tv, "task_vector"), load_state(base), load_state(kept)
    for name in b:
        torch.testing.assert_close(tau[name], f[name] - b[name], rtol=0, atol=0)


def test_bad_input_is_one_clear_line(tmp_path, make_model, forget_file):
    base = make_model("base")
    out = tmp_path / "out"
    no_answer = tmp_path / "no_answer.json"
    no_answer.write_text(json.dumps([{"question": r["question"], "response": r["answer"]}
                                     for r in tofu_rows("forget01")[:3]]))
    _fails(["finetune", base, "--data", no_answer, "-o", out, *FAST], "no field 'answer'", "question, response")
    # a question or answer that is not a non-empty string: the file, the row and the field, never "None" trained on
    rows = tofu_rows("forget01")[:4]
    rows[2]["answer"] = None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rows))
    line = _fails(["finetune", base, "--data", bad, "-o", out, *FAST])
    assert line == (f"Error: data '{bad}': row 2: field 'answer' is None, not a non-empty string; "
                    "fix or remove the row"), line
    rows[2]["answer"], rows[1]["question"] = "An answer.", "  "
    bad.write_text(json.dumps(rows))
    _fails(["task-vector", base, "--forget", bad, "-o", out, *FAST],
           f"data '{bad}': row 1: field 'question' is an empty string")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _fails(["finetune", base, "--data", empty, "-o", out, *FAST], "empty")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for item in base.iterdir():
        if not item.name.endswith((".safetensors", ".safetensors.index.json")):
            shutil.copy(item, no_weights / item.name)
    _fails(["finetune", no_weights, "--data", forget_file, "-o", out, *FAST], "holds no safetensors weights")
    _fails(["task-vector", no_weights, "--forget", forget_file, "-o", out, *FAST], "holds no safetensors weights")
    assert not out.exists()

    # the two forms of task-vector do not mix
    _fails(["task-vector", base, "--forget", forget_file, "--base", base, "--finetuned", base, "-o", out],
           "not both")
    _fails(["task-vector", "--base", base, "--finetuned", base, "-o", out, "--epochs", "3", "--lora-rank", "2"],
           "--epochs, --lora-rank", "only apply to `task-vector MODEL --forget DATA`")
    _fails(["task-vector", base, "-o", out], "needs both MODEL and --forget DATA")
    _fails(["task-vector", "--base", base, "-o", out], "--base A --finetuned B")
    _fails(["task-vector", base, "--forget", forget_file, "-o", out, "--finetuned-dir", out], "same folder")
    # options that cannot work
    _fails(["finetune", base, "--data", forget_file, "-o", out, "--lora-alpha", "8"], "only applies with --lora-rank")
    _fails(["finetune", base, "--data", forget_file, "-o", out, "--epochs", "1", "--warmup", "2"], "longer than")
    _fails(["finetune", base, "--data", forget_file, "-o", out, *FAST, "--lora-rank", "2", "--lora-targets", "nope"],
           "--lora-targets 'nope'")
    if shutil.which("nvidia-smi") is None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            _fails(["finetune", base, "--data", forget_file, "-o", out, "--optim", "paged_adamw_8bit"],
                   "needs bitsandbytes")
    assert not out.exists()


def test_deepspeed_zero3_without_weight_gathering_is_refused_before_training(tmp_path, monkeypatch):
    from perta_hub.errors import InputError
    from perta_hub.training.trainer import check_deepspeed_saving

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "false")
    with pytest.raises(InputError, match="zero3_save_16bit_model"):
        check_deepspeed_saving()
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "true")
    check_deepspeed_saving()
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ds))
    with pytest.raises(InputError, match="stage3_gather_16bit_weights_on_model_save"):
        check_deepspeed_saving()
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    check_deepspeed_saving()
