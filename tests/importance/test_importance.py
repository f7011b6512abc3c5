"""compute-weights: importances against plain-autograd references, data parallel, artifact, apply, bad data."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import DataError, InputError, NonFiniteError
from perta_hub.importance.gradients import accumulate_importance, cast_importance
from tests.conftest import tofu_rows
from tests.helpers import REPO, accelerate_launch, load_state


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _token_examples(n: int, seed: int = 0, vocab: int = 384) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Hand-made examples: random ids of random lengths, labels -100 over a random-length prompt."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(6, 24, (1,), generator=gen))
        prompt = int(torch.randint(1, length - 1, (1,), generator=gen))
        ids = torch.randint(5, vocab, (length,), generator=gen)
        labels = ids.clone()
        labels[:prompt] = -100
        out.append((ids, labels))
    return out


def _collate(examples: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    batch = {"input_ids": torch.zeros(len(examples), width, dtype=torch.long),
             "attention_mask": torch.zeros(len(examples), width, dtype=torch.long),
             "labels": torch.full((len(examples), width), -100, dtype=torch.long)}
    for i, (ids, labels) in enumerate(examples):
        batch["input_ids"][i, :len(ids)] = ids
        batch["attention_mask"][i, :len(ids)] = 1
        batch["labels"][i, :len(ids)] = labels
    return batch


def _reference(model, examples, method: str) -> dict[str, torch.Tensor]:
    """Plain autograd, one example at a time: HF's own loss (mean NLL over the shifted answer labels)."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for ids, labels in examples:
        loss = model(input_ids=ids[None], labels=labels[None]).loss
        grads = torch.autograd.grad(loss, list(params.values()))
        for (name, _), g in zip(params.items(), grads, strict=True):
            total[name] += g.double() if method == "grad" else g.double() ** 2
    return {n: (t / len(examples)).abs().float() if method == "grad" else (t / len(examples)).float()
            for n, t in total.items()}


def _assert_close_maps(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], rtol: float = 1e-4) -> None:
    assert set(got) == set(ref)
    for name in ref:
        scale = float(ref[name].abs().max())
        assert scale > 0, name
        torch.testing.assert_close(got[name].float(), ref[name], rtol=rtol, atol=rtol * scale, msg=name)


@pytest.mark.parametrize("method", ["grad", "fisher"])
def test_importance_equals_plain_autograd_reference(make_model, method):
    model = _load(make_model("m"))
    examples = _token_examples(7)
    # uneven micro-batches with padding: 3 + 4 examples
    batches = [_collate(examples[:3]), _collate(examples[3:])]
    result = accumulate_importance(model, batches, method=method, progress=False)
    assert result.num_examples == 7
    assert result.num_answer_tokens == sum(int((lab[1:] != -100).sum()) for _, lab in examples)
    _assert_close_maps(result.importance, _reference(model, examples, method))
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_fisher_is_not_the_square_of_the_batch_gradient(make_model):
    model = _load(make_model("m"))
    batches = [_collate(_token_examples(4))]
    grad = accumulate_importance(model, batches, method="grad", progress=False).importance
    fisher = accumulate_importance(model, batches, method="fisher", progress=False).importance
    name = "model.layers.0.mlp.up_proj.weight"
    # Jensen: mean(g^2) >= mean(g)^2, strictly for distinct examples
    assert bool((fisher[name] >= grad[name] ** 2 * (1 - 1e-5)).all())
    assert float((fisher[name] - grad[name] ** 2).sum()) > 0


def test_params_regex_and_gradient_checkpointing(make_model):
    model = _load(make_model("m"))
    examples = _token_examples(3, seed=1)
    ref = _reference(model, examples, "fisher")
    from perta_hub.importance.gradients import enable_gradient_checkpointing

    enable_gradient_checkpointing(model)
    calls = []
    mlp = model.model.layers[1].mlp
    forward = mlp.forward
    mlp.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # module hooks do not fire on recompute
    result = accumulate_importance(model, [_collate(examples)], method="fisher", params=r"layers\.1\.", progress=False)
    assert len(calls) == 2 * len(examples)  # forward, then the recompute in backward
    assert set(result.importance) == {n for n in ref if "layers.1." in n}
    _assert_close_maps(result.importance, {n: ref[n] for n in result.importance})
    with pytest.raises(InputError, match="matches none"):
        accumulate_importance(model, [_collate(examples)], method="grad", params="nothing_like_this")
    with pytest.raises(InputError, match="not a valid regular expression"):
        accumulate_importance(model, [_collate(examples)], method="grad", params="(")


def test_cast_counts_underflow_and_refuses_overflow():
    t = {"a": torch.tensor([0.0, 1e-42, 1e-3, 3e-39]), "b": torch.tensor([1e-44, 2.0])}
    cast, under = cast_importance(t, torch.bfloat16)
    assert under == 2 and cast["a"].dtype == torch.bfloat16
    assert cast_importance(t, torch.float32)[1] == 0
    with pytest.raises(NonFiniteError, match="overflows in float16"):
        cast_importance({"c": torch.tensor([1e6])}, torch.float16)


# ---------------------------------------------------------------------------------------------- the command


def _write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.fixture
def qa_files(tmp_path):
    forget = _write_rows(tmp_path / "forget.json", tofu_rows("forget01")[:5])
    retain = _write_rows(tmp_path / "retain.json", tofu_rows("retain99")[:9])
    return forget, retain


def _encoded(path: str, tokenizer, max_length: int = 512) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from perta_hub.data import encode_dataset, load_qa

    return [(torch.tensor(e.input_ids), torch.tensor(e.labels))
            for e in encode_dataset(tokenizer, load_qa(path), max_length=max_length)]


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.parametrize("method", ["grad", "fisher"])
def test_compute_weights_artifact_round_trip(tmp_path, make_model, tokenizer, qa_files, method):
    from perta_hub.io.artifacts import load_artifact

    model_dir = make_model("m", tie_word_embeddings=method == "fisher")  # tied: no lm_head.weight entry
    forget, retain = qa_files
    out = tmp_path / "wm"
    output = _run(["compute-weights", str(model_dir), "--forget", forget, "--retain", retain, "--method", method,
                   "-o", str(out), "--batch-size", "2", "--max-examples", "6", "--seed", "3", "--dtype", "float32",
                   "--device", "cpu", "--max-shard-size", "30KB"])
    assert "compute-weights: done in" in output and "peak memory" in output

    art = load_artifact(out, "weight_map")
    assert ("lm_head.weight" in art.group("importance_forget").names) == (method == "grad")
    cfg = art.config
    assert cfg["kind"] == "weight_map" and cfg["method"] == method
    assert (cfg["p"], cfg["lam"], cfg["eps"]) == (1.0, 1.0, 1e-12 if method == "grad" else 1e-24)
    assert cfg["model"]["revision"].startswith("sha256:") and cfg["gradients_at"] == "target"
    assert cfg["forget_data"]["num_examples"] == 5 and cfg["retain_data"]["num_examples"] == 6
    assert cfg["retain_data"]["max_examples"] == 6 and cfg["retain_data"]["seed"] == 3
    for role, path in (("forget_data", Path(forget)), ("retain_data", Path(retain))):  # the data's identity
        resolved = str(path.resolve())
        assert cfg[role]["source"] == resolved and cfg[role]["local_file"] == str(path)
        assert cfg[role]["files"] == [{"path": resolved, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]
    assert cfg["dtype"] == "float32" and cfg["underflow"]["total"] == 0
    card = (out / "README.md").read_text()
    assert "Privacy note" in card and "## Selectivity of w" in card and "| all | " in card
    sel = cfg["selectivity"]  # the map's spread of w at its own p, lam, eps (module rows, no layer rows)
    assert (sel["p"], sel["lam"], sel["eps"]) == (cfg["p"], cfg["lam"], cfg["eps"])
    assert sel["groups"]["all"]["parameters"] == cfg["num_parameters"]
    assert sum(sel["groups"]["all"]["histogram"]) == cfg["num_parameters"]
    assert not any(k.startswith("layer:") for k in sel["groups"]) and "module:q_proj" in sel["groups"]
    assert len(art.group("importance_forget").files) > 1  # sharded

    forget_ex = _encoded(forget, tokenizer)
    assert cfg["forget_data"]["num_answer_tokens"] == sum(int((lab != -100).sum()) for _, lab in forget_ex)
    from perta_hub.data.loading import load_qa, subsample

    retain_rows = subsample(load_qa(retain), max_examples=6, seed=3)
    retain_path = _write_rows(tmp_path / "retain_sub.json", [dict(r) for r in retain_rows])
    model = _load(model_dir)
    for group, examples in (("importance_forget", forget_ex), ("importance_retain", _encoded(retain_path, tokenizer))):
        got = load_state(out, group)
        _assert_close_maps(got, _reference(model, examples, method))


def test_bfloat16_storage_reports_underflow_and_apply_end_to_end(tmp_path, make_model, qa_files):
    from perta_hub.merge.apply import apply
    from perta_hub.merge.task_vector import task_vector

    base, tuned = make_model("base"), make_model("tuned", seed=1)
    forget, retain = qa_files
    wm = tmp_path / "wm"
    command = ["compute-weights", str(base), "--forget", forget, "--retain", retain, "--method", "fisher",
               "--params", r"layers\.0\.", "--device", "cpu"]
    _run([*command, "-o", str(wm)])
    cfg = json.loads((wm / "perta_config.json").read_text())
    assert cfg["dtype"] == "bfloat16" and cfg["params"] == r"layers\.0\."
    i_f, i_r = load_state(wm, "importance_forget"), load_state(wm, "importance_retain")
    # the reported counts: entries non-zero in float32 (the same command with --dtype float32) that the
    # storage dtype turns into zero; float16 (smallest subnormal 6e-8) underflows many squared gradients
    exact = tmp_path / "wm32"
    _run([*command, "-o", str(exact), "--dtype", "float32"])
    groups = ("importance_forget", "importance_retain")
    fp32 = {g: load_state(exact, g) for g in groups}
    half = tmp_path / "wm16"
    _run([*command, "-o", str(half), "--dtype", "float16"])
    for folder, dtype in ((wm, torch.bfloat16), (half, torch.float16)):
        expected = {g: sum(int(((t != 0) & (t.to(dtype) == 0)).sum()) for t in fp32[g].values()) for g in groups}
        expected["total"] = expected["importance_forget"] + expected["importance_retain"]
        assert json.loads((folder / "perta_config.json").read_text())["underflow"] == expected, dtype
    assert expected["total"] > 0  # float16: the count is exercised, not only zero
    assert i_f and all("layers.0." in n and t.dtype == torch.bfloat16 for n, t in i_f.items())

    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    out = apply(base, tv, alphas=[1.0], out_dir=tmp_path / "out", weights=wm, device="cpu", progress=False)[0]
    theta, tau, merged = load_state(base), load_state(tv, "task_vector"), load_state(out)
    for name, t in theta.items():
        if name in i_f:
            f, r = i_f[name].float(), i_r[name].float()
            w = f / (f + r + 1e-24)
        else:
            w = torch.zeros_like(t)  # no entry: left unchanged (w = 0, the default of --params)
        torch.testing.assert_close(merged[name], t - w * tau[name], rtol=1e-6, atol=1e-7, msg=name)
    _load(out)  # a loadable transformers checkpoint


def test_bad_data_gives_clear_errors(tmp_path, make_model, qa_files):
    model_dir = make_model("m")
    forget, retain = qa_files
    base = ["compute-weights", str(model_dir), "--retain", retain, "--method", "grad", "--device", "cpu"]

    def fails(args: list[str], *patterns: str) -> None:
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
        for pattern in patterns:
            assert pattern in result.output, result.output

    fails([*base, "--forget", forget, "-o", str(tmp_path / "a"), "--answer-field", "response"],
          "forget data", "no field 'response'", "question, answer")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    fails([*base, "--forget", str(empty), "-o", str(tmp_path / "b")], "forget data", "empty")
    fails([*base, "--forget", forget, "-o", str(tmp_path / "c"), "--max-length", "8"],
          "all 5 examples were dropped", "max_length=8")
    # a bad row of the retain file: numbered as in the file, even though only some retain rows are used
    rows = tofu_rows("retain99")[:9]
    rows[7] = {**rows[7], "answer": None}
    bad = _write_rows(tmp_path / "bad_retain.json", rows)
    result = CliRunner().invoke(main, ["compute-weights", str(model_dir), "--forget", forget, "--retain", bad,
                                       "--max-examples", "3", "--method", "grad", "-o", str(tmp_path / "e"),
                                       "--device", "cpu"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: retain data '{bad}': row 7: field 'answer' is None, not a non-empty string; fix or remove the row")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists() and not (tmp_path / "e").exists()

    # some answers cut away: kept going, and the count is recorded and printed
    rows = tofu_rows("forget01")[:3]
    rows[1] = {**rows[1], "question": "why " * 400}
    mixed = _write_rows(tmp_path / "mixed.json", rows)
    output = _run([*base, "--forget", mixed, "-o", str(tmp_path / "d"), "--max-length", "128"])
    assert "dropped 1 whose answer lies entirely beyond max_length=128" in output
    cfg = json.loads((tmp_path / "d" / "perta_config.json").read_text())
    assert cfg["forget_data"]["num_examples"] == 2 and cfg["forget_data"]["dropped_answer_beyond_max_length"] == 1


def test_engine_rejects_examples_without_answer(make_model):
    model = _load(make_model("m"))
    batch = _collate(_token_examples(2))
    batch["labels"][1] = -100
    with pytest.raises(DataError, match="1 example"):
        accumulate_importance(model, [batch], method="grad", progress=False)


def _assert_same_artifact(one: Path, two: Path) -> None:
    c1, c2 = (json.loads((d / "perta_config.json").read_text()) for d in (one, two))
    for role in ("forget_data", "retain_data"):
        assert c1[role]["num_examples"] == c2[role]["num_examples"]
        assert c1[role]["num_answer_tokens"] == c2[role]["num_answer_tokens"]
    for group in ("importance_forget", "importance_retain"):
        a, b = load_state(one, group), load_state(two, group)
        assert set(a) == set(b)
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6 * float(a[name].abs().max()))


@pytest.mark.slow
def test_two_process_accelerate_launch_equals_one_process(tmp_path, make_model, qa_files):
    model_dir = make_model("m")
    forget, retain = qa_files  # 5 and 9 examples: uneven shards (2+3, 4+5) over 2 processes
    common = [str(model_dir), "--forget", forget, "--retain", retain, "--batch-size", "2", "--dtype", "float32",
              "--device", "cpu"]
    for method in ("grad", "fisher"):
        one, two = tmp_path / f"one-{method}", tmp_path / f"two-{method}"
        _run(["compute-weights", *common, "--method", method, "-o", str(one)])
        # Two real processes on the CPU (torchrun + gloo): accelerate's multi-process launcher with no GPU visible.
        # --device auto with no GPU visible must still form the 2-process CPU group
        proc = accelerate_launch(["--multi_gpu", "--num_processes", "2"],
                                  ["compute-weights", *common, "--device", "auto", "--method", method, "-o", str(two)],
                                  tmp_path)
        assert "in 2 processes" in proc.stderr
        cfg = json.loads((two / "perta_config.json").read_text())
        assert cfg["compute"]["num_processes"] == 2 and cfg["compute"]["distributed"] == "data_parallel"
        _assert_same_artifact(one, two)


def test_single_process_cpu_launch_is_detected(monkeypatch):
    """`accelerate launch --num_processes 2 --cpu` (no MPI) runs one process with this environment."""
    from accelerate import PartialState

    from perta_hub.runtime.distributed import single_process_cpu_launch

    for key in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_PORT", "29500")
    state = PartialState(cpu=True)
    assert single_process_cpu_launch(state)
    monkeypatch.delenv("MASTER_PORT")  # --num_processes 1
    assert not single_process_cpu_launch(state)


@pytest.mark.slow
def test_fsdp2_sharded_model_gives_the_same_importances(tmp_path, make_model):
    """FSDP2 (fully_shard) on CPU with gloo, 2 processes: hooks see reduce-scattered gradient shards."""
    model_dir = make_model("m")
    examples = _token_examples(7, seed=2)
    batches = [_collate(examples[i:i + 2]) for i in range(0, 7, 2)]  # 4 batches: 2 + 2 per process
    batches.append(_collate(examples[:1]))  # a 5th: process 0 runs 3 batches, process 1 runs 2 + a filler step
    torch.save(batches, tmp_path / "batches.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests" / "importance" / "fsdp_importance_worker.py"), str(model_dir), str(tmp_path / "batches.pt"),
         str(tmp_path / "out.pt")],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(tmp_path / "out.pt")
    model = _load(model_dir)
    every = examples + examples[:1]
    for method in ("grad", "fisher"):
        assert results[method]["num_examples"] == 8
        _assert_close_maps(results[method]["importance"], _reference(model, every, method))
