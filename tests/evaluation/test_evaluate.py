"""perta-hub evaluate: TOFU metrics on hand-made numbers, scoring on a tiny model, the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import InputError
from perta_hub.evaluation import metrics

# ------------------------------------------------------------------------------ metrics by hand


def test_truth_ratio_and_aggregates():
    # P~(para) = 0.5; perturbed probabilities 1/4 and 1/16 -> geometric mean 1/8 -> TR = 0.25
    tr = metrics.truth_ratio(math.log(2), [math.log(4), math.log(16)])
    assert tr == pytest.approx(0.125 / (0.5 + 1e-10), rel=1e-12)
    assert tr == pytest.approx(0.25)
    ratios = [0.25, 2.0, 1.0]
    # forget: min(TR, 1/TR) -> 0.25, 0.5, 1.0
    assert metrics.truth_ratio_forget(ratios) == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    # retain: max(0, 1 - TR) -> 0.75, 0, 0
    assert metrics.truth_ratio_retain(ratios) == pytest.approx(0.25)


def test_normalised_probability_and_probability():
    assert metrics.normalised_probability(0.6, [0.1, 0.1, 0.2]) == pytest.approx(0.6 / (1.0 + 1e-10))
    assert metrics.normalised_probability(0.0, [0.0, 0.0]) == 0.0  # the 1e-10 keeps it finite
    assert metrics.probability(math.log(4)) == pytest.approx(0.25)


def test_forget_quality_ks_pvalue():
    # fully separated samples of 3 and 3: exact p = 2 / C(6, 3) = 0.1
    assert metrics.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert metrics.forget_quality([0.2, 0.5, 0.9], [0.2, 0.5, 0.9]) == pytest.approx(1.0)
    assert metrics.log10_or_none(0.1) == pytest.approx(-1.0)
    assert metrics.log10_or_none(None) is None


def test_model_utility_harmonic_mean_and_zero():
    assert metrics.model_utility([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert metrics.model_utility([0.9] * 8 + [0.0]) == 0.0
    assert metrics.model_utility([0.5] * 9) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("preds", "labels", "expected"),
    [
        ([1, 2, 3], [1, 2, 3], 1.0),  # k* = 0
        ([9, 2, 3], [1, 2, 3], 2 / 3),  # suffix of 2 matches: k* = 1
        ([1, 9, 3], [1, 2, 3], 1 / 3),  # only the last token matches: k* = 2
        ([1, 2, 9], [1, 2, 3], 0.0),  # no matching suffix: k* = n
        ([], [], 0.0),
    ],
)
def test_extraction_strength(preds, labels, expected):
    assert metrics.extraction_strength(preds, labels) == pytest.approx(expected)


def test_rouge_recall_with_stemming():
    s = metrics.rouge_scores("The cat sat", "the cats sat down")
    assert s["rougeL_recall"] == pytest.approx(1.0)  # "cats" stems to "cat"
    assert s["rougeL_f1"] == pytest.approx(2 * 1.0 * 0.75 / 1.75)
    assert metrics.rouge_scores("alpha beta gamma delta", "beta delta")["rougeL_recall"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------ scoring on a tiny model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer) -> Path:
    from perta_hub.demo.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("eval") / "tiny", tokenizer, seed=0)


@pytest.fixture(scope="module")
def lm(tiny_model):
    from perta_hub.evaluation.scoring import load_model

    return load_model(str(tiny_model), device="cpu")


def test_score_matches_unbatched_reference(lm, tokenizer):
    import torch
    import torch.nn.functional as F

    from perta_hub.data.encoding import encode_qa
    from perta_hub.evaluation.scoring import score

    examples = [encode_qa(tokenizer, "Who is he?", "A writer."),
                encode_qa(tokenizer, "Where was the author born, and when?", "In Kuwait City, in 1956, to a family.")]
    batched = score(lm, examples, batch_size=2, progress=False)
    for enc, got in zip(examples, batched, strict=True):
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0, :-1]
        labels = torch.tensor(enc.labels[1:])
        mask = labels != -100
        expected = F.cross_entropy(logits[mask], labels[mask], reduction="mean").item()
        assert got.avg_nll == pytest.approx(expected, rel=1e-5)
        assert got.num_tokens == enc.num_answer_tokens
        preds = logits[mask].argmax(-1).tolist()[:-1]
        assert got.extraction_strength == metrics.extraction_strength(preds, labels[mask].tolist()[:-1])


def test_batched_generation_equals_one_by_one(lm, tokenizer):
    from perta_hub.data.encoding import encode_prompt
    from perta_hub.evaluation.scoring import generate

    prompts = [encode_prompt(tokenizer, q) for q in ("Who?", "Which books did the author write in 1990?")]
    together = generate(lm, prompts, batch_size=2, max_new_tokens=12, progress=False)
    alone = [generate(lm, [p], batch_size=1, max_new_tokens=12, progress=False)[0] for p in prompts]
    assert together == alone
    assert all(isinstance(t, str) and t == t.strip() for t in together)


# ------------------------------------------------------------------------------ the runner and the CLI

N = 3
PER_QUESTION = [
    "forget_Q_A_Prob", "forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
    "extraction_strength", "retain_Q_A_Prob", "retain_Q_A_PARA_Prob", "retain_Q_A_PERT_Prob", "retain_Q_A_ROUGE",
    "retain_Truth_Ratio", "retain_extraction_strength", "ra_Q_A_Prob", "ra_Q_A_PERT_Prob", "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE", "ra_Truth_Ratio", "wf_Q_A_Prob", "wf_Q_A_PERT_Prob", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
]


@pytest.fixture(scope="module")
def first_run(tiny_model, tofu_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "results.json"
    result = CliRunner().invoke(main, [
        "evaluate", str(tiny_model), "--benchmark", "tofu", "--forget-split", "forget10", "-o", str(out),
        "--data-dir", str(tofu_dir), "--max-examples", str(N), "--device", "cpu", "--batch-size", "4",
        "--max-new-tokens", "8",
    ])
    assert result.exit_code == 0, result.output
    return result, out


def test_end_to_end_json_is_complete(first_run, tofu_dir):
    result, out = first_run
    data = json.loads(out.read_text())
    for key in PER_QUESTION:
        assert sorted(data[key]["value_by_index"]) == [str(i) for i in range(N)], key
        per_question = list(data[key]["value_by_index"].values())
        if key.endswith("_ROUGE"):
            expected = metrics.mean(v["rougeL_recall"] for v in per_question)
        elif key.endswith("_PERT_Prob"):
            expected = metrics.mean(metrics.mean(v["prob"]) for v in per_question)
        elif key == "forget_truth_ratio":
            expected = metrics.truth_ratio_forget(v["score"] for v in per_question)
        elif key.endswith("_Truth_Ratio"):
            expected = metrics.truth_ratio_retain(v["score"] for v in per_question)
        else:  # probabilities and extraction strength
            expected = metrics.mean(v["prob"] if "prob" in v else v["score"] for v in per_question)
        assert data[key]["agg_value"] == pytest.approx(expected, rel=1e-12), key
    assert len(data["forget_Q_A_PERT_Prob"]["value_by_index"]["0"]["prob"]) == 5
    assert len(data["ra_Q_A_PERT_Prob"]["value_by_index"]["0"]["prob"]) == 3
    assert set(data["model_utility"]["components"]) == {
        "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE",
        "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"}
    assert data["model_utility"]["agg_value"] == pytest.approx(
        metrics.model_utility(list(data["model_utility"]["components"].values())))
    # aggregates are recomputable from the per-question values
    trs = [v["score"] for v in data["forget_truth_ratio"]["value_by_index"].values()]
    assert data["forget_truth_ratio"]["agg_value"] == pytest.approx(metrics.truth_ratio_forget(trs))
    para = data["forget_Q_A_PARA_Prob"]["value_by_index"]["1"]["avg_loss"]
    pert = data["forget_Q_A_PERT_Prob"]["value_by_index"]["1"]["avg_loss"]
    assert trs[1] == pytest.approx(metrics.truth_ratio(para, pert))
    rows = json.loads((tofu_dir / "forget10_perturbed.json").read_text())
    assert data["forget_Q_A_ROUGE"]["value_by_index"]["2"]["ground_truth"] == rows[2]["answer"].strip()
    assert data["subset"] is True and data["meta"]["subset"] is True and data["meta"]["max_examples"] == N
    assert data["meta"]["forget_split"] == "forget10" and data["meta"]["revision"].startswith("sha256:")
    # no reference: forget quality is None, with a message in the JSON and on the terminal
    assert data["forget_quality"]["agg_value"] is None
    assert "--retain-logs" in data["forget_quality"]["message"]
    assert "--retain-logs" in result.output and "forget quality" in result.output


def test_retain_logs_reuse_and_card(first_run, tiny_model, tofu_dir, tmp_path):
    _, logs = first_run
    model_dir = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_model, model_dir)
    (model_dir / "README.md").write_text("---\nlicense: mit\n---\n\n# My model\n\nHand-written text.\n")
    (model_dir / "perta_config.json").write_text(json.dumps({"kind": "model", "alpha": 0.5, "method": "grad"}))
    out = tmp_path / "res.json"
    png = tmp_path / "sweep.png"
    args = ["evaluate", str(model_dir), "--forget-split", "forget10", "--retain-logs", str(logs), "-o", str(out),
            "--data-dir", str(tofu_dir), "--max-examples", str(N), "--device", "cpu", "--max-new-tokens", "8",
            "--write-card", "--plot", str(png)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    # the same weights as the reference: identical truth ratios, KS p-value 1
    assert data["forget_quality"]["agg_value"] == pytest.approx(1.0)
    assert data["forget_quality"]["log10"] == pytest.approx(0.0, abs=1e-12)
    assert data["meta"]["label"] == "grad alpha=0.5"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from huggingface_hub import ModelCard

    card = ModelCard.load(model_dir / "README.md")
    assert "Hand-written text." in card.text and card.data.license == "mit"
    by_type = {r.metric_type: r for r in card.data.eval_results}
    assert by_type["forget_quality"].metric_value == pytest.approx(1.0)
    assert by_type["model_utility"].dataset_type == "locuslab/TOFU"
    assert by_type["model_utility"].dataset_config == "forget10"
    n_results = len(card.data.eval_results)
    # a second run (new -o and --plot: existing ones are refused) replaces the card's results, not duplicates
    again = [tmp_path / "res2.json" if a == str(out) else tmp_path / "sweep2.png" if a == str(png) else a
             for a in args]
    result = CliRunner().invoke(main, [str(a) for a in again])
    assert result.exit_code == 0, result.output
    assert len(ModelCard.load(model_dir / "README.md").data.eval_results) == n_results


def test_retain_logs_checks(first_run, tmp_path):
    from perta_hub.evaluation.tofu import read_retain_logs

    _, logs = first_run
    assert set(read_retain_logs(logs, "forget10")) == {str(i) for i in range(N)}
    with pytest.raises(InputError, match="computed on forget10, not forget01"):
        read_retain_logs(logs, "forget01")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_utility": {"agg_value": 0.5}}))
    with pytest.raises(InputError, match="no forget_truth_ratio"):
        read_retain_logs(bad)
    # open-unlearning's TOFU_EVAL.json layout is accepted as is
    ou = tmp_path / "TOFU_EVAL.json"
    ou.write_text(json.dumps({"forget_truth_ratio": {"agg_value": 0.6, "value_by_index": {
        "0": {"score": 0.5}, "1": {"score": 0.7}}}}))
    assert read_retain_logs(ou, "forget10") == {"0": 0.5, "1": 0.7}


def test_cli_rejects_both_references_and_unknown_split(tmp_path):
    logs = tmp_path / "l.json"
    logs.write_text("{}")
    result = CliRunner().invoke(main, ["evaluate", "m", "--retain-logs", str(logs), "--retain-model", "r"])
    assert (result.exit_code, result.output) == (
        InputError.exit_code, "Error: pass either --retain-logs or --retain-model, not both\n")
    result = CliRunner().invoke(main, ["evaluate", "m", "--forget-split", "forget20"])
    assert result.exit_code == 2  # click's usage error
    assert result.output.splitlines()[-1] == (
        "Error: Invalid value for '--forget-split': 'forget20' is not one of 'forget01', 'forget05', 'forget10'.")
    from perta_hub.evaluation import run_evaluation

    with pytest.raises(InputError) as err:  # the same check in the Python API
        run_evaluation(["m"], forget_split="forget20")
    assert str(err.value) == "unknown forget split 'forget20'; use one of forget01, forget05, forget10"


def test_retain_model_is_evaluated_first_and_saved(tiny_model, tofu_dir, tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, [
        "evaluate", str(tiny_model), "--forget-split", "forget01", "--retain-model", str(tiny_model),
        "-o", str(out), "--data-dir", str(tofu_dir), "--max-examples", "2", "--device", "cpu",
        "--max-new-tokens", "4",
    ])
    assert result.exit_code == 0, result.output
    saved = tmp_path / "r.retain.json"
    assert saved.is_file() and f"--retain-logs {saved}" in result.output
    assert json.loads(out.read_text())["forget_quality"]["agg_value"] == pytest.approx(1.0)


def test_batches_keep_groups_together():
    from perta_hub.evaluation.scoring import _batches

    assert _batches(5, 2, None) == [(0, 2), (2, 4), (4, 5)]
    # the five perturbed answers of each of three questions, batch of 12: two questions, then one
    assert _batches(15, 12, [5, 5, 5]) == [(0, 10), (10, 15)]
    # uneven groups never split; a group larger than the batch gets its own batch
    assert _batches(10, 4, [3, 2, 5]) == [(0, 3), (3, 5), (5, 10)]
