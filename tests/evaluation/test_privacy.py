"""MIA attacks and PrivLeak against hand computations on tiny models; bootstrap intervals and the paired
comparison recomputed by hand from the per-row values of a results JSON; where the numbers appear."""

from __future__ import annotations

import copy
import json
import random
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.errors import DataError, InputError
from perta_hub.evaluation import privacy

N = 4  # rows of each split: forget01's and holdout01's first four
ATTACKS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus")


# ------------------------------------------------------------------------------ plain-Python references


def pairwise_auc(members: list[float], nonmembers: list[float]) -> float:
    """P(member score > non-member score), ties 1/2, by looping over every pair."""
    wins = sum(1.0 if m > n else 0.5 if m == n else 0.0 for m in members for n in nonmembers)
    return wins / (len(members) * len(nonmembers))


def hand_scores(model_dir: Path, tokenizer: Any, rows: list[dict[str, str]], k: float) -> dict[str, list[float]]:
    """Each attack's score of each row, one unpadded forward pass per row, per-token loops in float64."""
    import math

    import torch
    from transformers import AutoModelForCausalLM

    from perta_hub.data.encoding import encode_qa

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out: dict[str, list[float]] = {a: [] for a in ATTACKS}
    for row in rows:
        enc = encode_qa(tokenizer, row["question"], row["answer"])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0].double()
        logps, zs = [], []
        for pos, label in enumerate(enc.labels):
            if label == -100:
                continue
            dist = torch.log_softmax(logits[pos - 1], dim=-1)  # the logits one step earlier predict this label
            p = dist.exp()
            mu = float((p * dist).sum())
            var = float((p * dist * dist).sum()) - mu * mu
            logps.append(float(dist[label]))
            zs.append((logps[-1] - mu) / math.sqrt(max(var, 1e-6)))
        loss = -sum(logps) / len(logps)
        text = tokenizer.decode([t for t in enc.labels if t != -100], skip_special_tokens=True)
        keep = max(1, int((len(logps) - 1) * k))  # the final (end-of-turn) label is left out, as open-unlearning
        out["mia_loss"].append(-loss)
        out["mia_zlib"].append(-loss / len(zlib.compress(text.encode("utf-8"))))
        out["mia_min_k"].append(sum(sorted(logps[:-1])[:keep]) / keep)
        out["mia_min_k_plus_plus"].append(sum(sorted(zs[:-1])[:keep]) / keep)
    return out


# ------------------------------------------------------------------------------ pure functions


def test_auc_equals_the_pairwise_count_with_ties():
    import numpy as np

    rng = random.Random(0)
    members = [rng.choice([0.0, 0.5, 1.0, 1.5, 2.0]) for _ in range(9)]
    nonmembers = [rng.choice([0.0, 0.5, 1.0]) for _ in range(7)]
    assert privacy.auc(members, nonmembers) == pytest.approx(pairwise_auc(members, nonmembers), abs=1e-12)
    assert privacy.auc([1.0, 2.0], [1.0, 2.0]) == pytest.approx(0.5)
    assert privacy.auc([3.0], [1.0, 2.0]) == 1.0 and privacy.auc([0.0], [1.0, 2.0]) == 0.0
    # many resamples at once: one AUC per row
    m = np.array([members, members[::-1]])
    n = np.array([nonmembers, [5.0] * 7])
    assert privacy.auc(m, n).tolist() == pytest.approx([pairwise_auc(members, nonmembers), 0.0])
    with pytest.raises(ValueError):
        privacy.auc([], [1.0])


def test_privleak_is_the_relative_auc_change():
    # issue 24: (AUC(model) - AUC(retain)) / AUC(retain) * 100, AUCs with the forget rows as members
    assert privacy.privleak(0.99, 0.5) == pytest.approx((0.99 - 0.5) / 0.5 * 100)
    assert privacy.privleak(0.99, 0.5) == pytest.approx(98.0)  # a model that still knows its forget set
    assert privacy.privleak(0.5, 0.5) == 0.0
    assert privacy.privleak(0.3, 0.6) == pytest.approx(-50.0)  # over-unlearned: < 0
    # the number MUSE's and open-unlearning's code publish for the same AUCs (holdout positive)
    assert privacy.muse_privleak(0.99, 0.5) == pytest.approx(((1 - 0.99) - 0.5) / 0.5 * 100)


def test_min_k_counts_at_least_one_token_and_drops_the_final_label():
    assert privacy.min_k_score([-1.0, -5.0, -3.0, -9.0], 0.4) == -5.0  # int(3 * 0.4) = 1 of [-1, -5, -3]
    assert privacy.min_k_score([-1.0, -5.0, -3.0, -9.0], 1.0) == pytest.approx(-3.0)
    assert privacy.min_k_score([-2.0], 0.4) == 0.0  # nothing left: open-unlearning's 0
    z = privacy.min_k_plus_plus_score([-1.0, -4.0, 0.0], [-2.0, -2.0, 0.0], [4.0, 0.0, 0.0], 0.5)
    assert z == pytest.approx((-4.0 + 2.0) / 1e-3)  # the variance is floored at 1e-6
    with pytest.raises(ValueError):
        privacy.min_k_mean([1.0], 0.0)


# ------------------------------------------------------------------------------ evaluate on tiny models


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer) -> dict[str, Path]:
    from perta_hub.demo.tiny import build_tiny_llama

    root = tmp_path_factory.mktemp("mia")
    return {"model": build_tiny_llama(root / "model", tokenizer, seed=0),
            "retain": build_tiny_llama(root / "retain", tokenizer, seed=1)}


@pytest.fixture(scope="module")
def evaluated(models, tofu_dir, tmp_path_factory) -> dict[str, Any]:
    """The retain model's JSON, then the model's with it as --retain-logs (and 200 bootstrap resamples)."""
    from perta_hub.evaluation import evaluate_tofu
    from perta_hub.evaluation.outputs import save_results

    folder = tmp_path_factory.mktemp("mia-run")
    common = {"forget_split": "forget01", "data_dir": tofu_dir, "max_examples": N, "device": "cpu",
              "max_new_tokens": 2, "batch_size": 3, "progress": False}
    retain = evaluate_tofu(str(models["retain"]), **common)
    logs = save_results(retain, folder / "retain.json")
    model = evaluate_tofu(str(models["model"]), retain_logs=logs, bootstrap=200, seed=3, **common)
    return {"retain": retain, "model": model, "logs": logs, "path": save_results(model, folder / "model.json")}


def test_attack_scores_aucs_and_privleak_match_hand_computations(evaluated, models, tokenizer, tofu_dir):
    rows = {side: json.loads((tofu_dir / f"{name}.json").read_text())[:N]
            for side, name in (("forget", "forget01_perturbed"), ("holdout", "holdout01"))}
    hand = {who: {side: hand_scores(models[who], tokenizer, rows[side], 0.4) for side in rows}
            for who in ("model", "retain")}
    for who in ("model", "retain"):
        result = evaluated[who]
        for attack in ATTACKS:
            for side in ("forget", "holdout"):
                got = [result[attack][side]["value_by_index"][str(i)]["score"] for i in range(N)]
                assert got == pytest.approx(hand[who][side][attack], rel=1e-4, abs=1e-6), (who, attack, side)
            expected_auc = pairwise_auc(hand[who]["forget"][attack], hand[who]["holdout"][attack])
            assert result[attack]["agg_value"] == pytest.approx(expected_auc, abs=1e-12), (who, attack)
    model = evaluated["model"]
    for attack in ATTACKS:
        a, r = model[attack]["agg_value"], evaluated["retain"][attack]["agg_value"]
        expected = (a - r) / (r + 1e-10) * 100  # issue 24: the relative change of the member-positive AUC
        assert model[attack]["privleak"] == pytest.approx(expected, rel=1e-9, abs=1e-9), attack
        assert model["privleak"]["reference_auc"][attack] == pytest.approx(r, abs=1e-12)
    assert model["privleak"]["agg_value"] == model["mia_min_k"]["privleak"]
    assert model["mia_min_k"]["k"] == 0.4 and model["meta"]["splits"]["holdout"] == "holdout01"
    assert evaluated["retain"]["privleak"]["agg_value"] is None  # no reference for the reference itself
    assert "--retain-model" in evaluated["retain"]["privleak"]["message"]


def test_reference_rows_are_stored_and_reused(evaluated):
    from perta_hub.evaluation.reference import read_reference

    model, retain = evaluated["model"], evaluated["retain"]
    ref = model["reference"]
    assert ref["source"] == str(evaluated["logs"])
    assert ref["forget_truth_ratio"] == {i: v["score"] for i, v in retain["forget_truth_ratio"]["value_by_index"]
                                         .items()}
    assert ref["mia"]["mia_zlib"]["holdout"] == {i: v["score"] for i, v in retain["mia_zlib"]["holdout"]
                                                 ["value_by_index"].items()}
    read = read_reference(evaluated["logs"], "forget01")
    assert read.k == 0.4 and set(read.mia) == set(ATTACKS)


def test_bootstrap_recomputes_each_resample_from_the_rows(evaluated):
    """The identity draw gives back every aggregate; resample 0 recomputed by hand from the JSON's rows."""
    import numpy as np
    from scipy.stats import hmean, ks_2samp

    from perta_hub.evaluation.bootstrap import INTERVAL_KEYS, aggregates, draw, point_value, row_table

    data = json.loads(evaluated["path"].read_text())
    table = row_table(data)
    identity = {s: np.arange(n)[None, :] for s, n in table.sizes().items()}
    again = aggregates(table, identity)
    assert set(again) == set(INTERVAL_KEYS) and len(INTERVAL_KEYS) == 22 + 2 + 4 + 4
    for key in INTERVAL_KEYS:
        assert again[key][0] == pytest.approx(point_value(data, key), rel=1e-9, abs=1e-12), key

    idx = draw(table.sizes(), 200, 3)
    values = aggregates(table, idx)
    rows = [str(i) for i in idx["forget"][0]]
    hold = [str(i) for i in idx["holdout"][0]]
    mine = [data["forget_truth_ratio"]["value_by_index"][i]["score"] for i in rows]
    theirs = [data["reference"]["forget_truth_ratio"][i] for i in rows]
    assert values["forget_quality"][0] == pytest.approx(ks_2samp(mine, theirs).pvalue)
    members = [data["mia_min_k"]["forget"]["value_by_index"][i]["score"] for i in rows]
    nonmembers = [data["mia_min_k"]["holdout"]["value_by_index"][i]["score"] for i in hold]
    ref_m = [data["reference"]["mia"]["mia_min_k"]["forget"][i] for i in rows]
    ref_n = [data["reference"]["mia"]["mia_min_k"]["holdout"][i] for i in hold]
    a, r = pairwise_auc(members, nonmembers), pairwise_auc(ref_m, ref_n)
    assert values["mia_min_k"][0] == pytest.approx(a)
    assert values["privleak"][0] == pytest.approx(((1 - a) - (1 - r)) / ((1 - r) + 1e-10) * 100)
    parts = []
    for split, key, field in (("retain", "retain_Q_A_Prob", "prob"), ("retain", "retain_Q_A_ROUGE", "rougeL_recall"),
                              ("retain", "retain_Truth_Ratio", "score"), ("ra", "ra_Q_A_Prob_normalised", "prob"),
                              ("ra", "ra_Q_A_ROUGE", "rougeL_recall"), ("ra", "ra_Truth_Ratio", "score"),
                              ("wf", "wf_Q_A_Prob_normalised", "prob"), ("wf", "wf_Q_A_ROUGE", "rougeL_recall"),
                              ("wf", "wf_Truth_Ratio", "score")):
        vals = [data[key]["value_by_index"][str(i)][field] for i in idx[split][0]]
        parts.append(np.mean([max(0.0, 1 - v) for v in vals] if key.endswith("Truth_Ratio") else vals))
    expected_mu = 0.0 if min(parts) == 0 else hmean(parts)
    assert values["model_utility"][0] == pytest.approx(expected_mu)

    boot = data["bootstrap"]
    assert (boot["resamples"], boot["seed"], boot["level"], boot["method"]) == (200, 3, 0.95, "percentile")
    for key in ("forget_quality", "model_utility", "privleak", "privleak_zlib", "mia_loss", "forget_Q_A_ROUGE"):
        low, high = boot["intervals"][key]
        assert [low, high] == pytest.approx(np.percentile(values[key], [2.5, 97.5]).tolist()), key
    assert boot["omitted"] == {}


def synthetic(n: int, seed: int, *, retain_scale: float = 1.0, tr_scale: float = 1.0, member_shift: float = 0.0,
              noise: float = 0.0, noise_seed: int = 0) -> dict[str, Any]:
    """A result with every per-row value `compare` reads: n rows per split, the reference's rows drawn from the
    same seed, the model's TRs = reference's x tr_scale, its forget MIA scores shifted by member_shift plus
    Gaussian noise (sd ``noise``, drawn from ``noise_seed``)."""
    import numpy as np

    from perta_hub.evaluation.bootstrap import INTERVAL_KEYS, MEAN_KEYS, PRIVLEAKS, _split_of, aggregates, row_table

    rng = random.Random(seed)
    ref_tr = [rng.uniform(0.2, 2.0) for _ in range(n)]
    ref_mia = {a: {"forget": {str(i): rng.gauss(0, 1) for i in range(n)},
                   "holdout": {str(i): rng.gauss(0, 1) for i in range(n)}} for a in ATTACKS}
    out: dict[str, Any] = {"meta": {"forget_split": "forget01", "label": f"synthetic {seed}"}}
    for key in MEAN_KEYS:
        scale = retain_scale if _split_of(key) == "retain" else 1.0
        rows = {}
        for i in range(n):
            if key.endswith("_PERT_Prob"):
                rows[str(i)] = {"prob": [rng.uniform(0.1, 0.5) for _ in range(3)]}
            elif key.endswith("_ROUGE"):
                rows[str(i)] = {"rougeL_recall": scale * rng.uniform(0.5, 1.0)}
            elif key == "forget_truth_ratio":
                rows[str(i)] = {"score": ref_tr[i] * tr_scale}
            elif "Truth_Ratio" in key or "extraction" in key:
                rows[str(i)] = {"score": rng.uniform(0.0, 0.8)}
            else:
                rows[str(i)] = {"prob": scale * rng.uniform(0.5, 1.0)}
        out[key] = {"value_by_index": rows}
    jitter = random.Random(noise_seed)
    for a in ATTACKS:
        out[a] = {"forget": {"value_by_index": {i: {"score": v + member_shift + jitter.gauss(0, noise) * (noise > 0)}
                                                for i, v in ref_mia[a]["forget"].items()}},
                  "holdout": {"value_by_index": {i: {"score": v} for i, v in ref_mia[a]["holdout"].items()}}}
    out["forget_quality"] = {"agg_value": 1.0}
    out["reference"] = {"source": "ref.json", "forget_truth_ratio": {str(i): v for i, v in enumerate(ref_tr)},
                        "mia": ref_mia}
    point = aggregates(row_table(out), {s: np.arange(n)[None, :] for s in ("forget", "holdout", "retain", "ra", "wf")})
    for key in INTERVAL_KEYS:  # the point values, where a result keeps them
        where, field = (("privleak", "agg_value") if key == "privleak" else (PRIVLEAKS[key], "privleak")
                        if key in PRIVLEAKS else (key, "agg_value"))
        out.setdefault(where, {})[field] = float(point[key][0])
    return out


def test_paired_comparison_verdicts():
    from perta_hub.evaluation.bootstrap import compare_results

    a = synthetic(40, 0)
    b = synthetic(40, 0, retain_scale=0.5, tr_scale=8.0, member_shift=1.5)  # less utility, forgets less, leaks
    assert a["privleak"]["agg_value"] == 0.0 and b["privleak"]["agg_value"] > 20
    cmp = compare_results(a, b, resamples=400, seed=1)
    for key in ("forget_quality", "model_utility", "privleak"):
        c = cmp["metrics"][key]
        assert c["verdict"] == "A beats B", (key, c)
        assert c["advantage_interval"][0] > 0 and c["interval"][0] <= c["difference"] <= c["interval"][1], key
    assert cmp["metrics"]["privleak"]["advantage"] == pytest.approx(abs(b["privleak"]["agg_value"]))
    rev = compare_results(b, a, resamples=400, seed=1)
    assert {c["verdict"] for c in rev["metrics"].values()} == {"B beats A"}
    assert rev["metrics"]["model_utility"]["interval"] == pytest.approx(
        [-x for x in reversed(cmp["metrics"]["model_utility"]["interval"])])
    same = compare_results(a, synthetic(40, 0), resamples=100)
    assert {c["verdict"] for c in same["metrics"].values()} == {"no measurable difference"}
    assert all(c["interval"] == [0.0, 0.0] for c in same["metrics"].values())
    # two models that leak alike (the same noise level around the reference): within the noise of 40 rows
    close = compare_results(synthetic(40, 0, noise=0.5, noise_seed=1), synthetic(40, 0, noise=0.5, noise_seed=2),
                            resamples=400, seed=1)
    assert close["metrics"]["privleak"]["verdict"] == "no measurable difference"
    low, high = close["metrics"]["privleak"]["advantage_interval"]
    assert low < 0 < high
    with pytest.raises(InputError, match="different rows of forget, holdout, retain, ra, wf"):
        compare_results(a, synthetic(30, 0), resamples=10)
    other_ref = synthetic(40, 5)
    with pytest.raises(InputError, match="different retain-model references"):
        compare_results(a, other_ref, resamples=10)


def test_compare_cli_and_its_checks(evaluated, tmp_path):
    path = evaluated["path"]
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(main, ["compare", str(path), str(path), "--bootstrap", "50", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("-> no measurable difference") == 3
    assert "A - B 0 [0, 0]" in result.output
    saved = json.loads(out.read_text())
    assert saved["resamples"] == 50 and saved["files"] == {"a": str(path), "b": str(path)}
    other = json.loads(path.read_text())
    other["meta"]["forget_split"] = "forget05"
    wrong = tmp_path / "other.json"
    wrong.write_text(json.dumps(other))
    result = CliRunner().invoke(main, ["compare", str(path), str(wrong)])
    assert (result.exit_code, result.output) == (InputError.exit_code, (
        "Error: A was evaluated on forget01, B on forget05; compare evaluations of the same forget split\n"))
    result = CliRunner().invoke(main, ["compare", str(path), str(evaluated["logs"]), "--bootstrap", "0"])
    assert result.exit_code == 2  # click's range check: at least one resample


def test_outputs_show_the_privacy_metrics(evaluated, tmp_path):
    from huggingface_hub import ModelCard

    from perta_hub.evaluation.plot import plot_sweep
    from perta_hub.evaluation.report import format_table, write_card

    model, retain = evaluated["model"], evaluated["retain"]
    table = format_table([model])
    assert "AUC Min-K%++" in table and "PrivLeak zlib" in table and "95 % bootstrap intervals" in table
    folder = tmp_path / "card"
    folder.mkdir()
    values = {r.metric_type: r.metric_value for r in ModelCard.load(write_card(folder, model)).data.eval_results}
    assert values["privleak"] == round(model["privleak"]["agg_value"], 6)
    assert values["mia_loss"] == round(model["mia_loss"]["agg_value"], 6)
    assert values["privleak_min_k_plus_plus"] == round(model["mia_min_k_plus_plus"]["privleak"], 6)
    png = plot_sweep([model, {**retain, "forget_quality": {"agg_value": None}}], tmp_path / "p.png")
    width = int.from_bytes(png.read_bytes()[16:20], "big")  # PNG IHDR: two panels are twice as wide
    assert width == 13 * 120


def test_cli_bootstrap_and_reference_checks(evaluated, models, tofu_dir, tmp_path):
    out = tmp_path / "r.json"
    args = ["evaluate", str(models["model"]), "--forget-split", "forget01", "--data-dir", str(tofu_dir),
            "--max-examples", str(N), "--device", "cpu", "--max-new-tokens", "2", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--retain-logs", str(evaluated["logs"]), "--mia-k", "0.2"])
    assert (result.exit_code, result.output) == (InputError.exit_code, (
        "Error: the retain logs' Min-K attacks used k = 0.4, this evaluation k = 0.2; pass --mia-k 0.4 or "
        "re-evaluate the retain model\n"))
    no_holdout = tmp_path / "tofu"
    no_holdout.mkdir()
    for f in tofu_dir.glob("*.json"):
        if not f.name.startswith("holdout"):
            (no_holdout / f.name).write_bytes(f.read_bytes())
    result = CliRunner().invoke(main, [*args[:4], "--data-dir", str(no_holdout), *args[6:]])
    assert result.exit_code == DataError.exit_code
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith("Error: the MIA attacks' non-members (TOFU's holdout01): ")
    assert "no holdout01.json" in errors[0]


def test_reference_with_only_aucs_gives_privleak_but_no_interval(evaluated, tmp_path):
    """open-unlearning's TOFU_EVAL.json: truth ratios and mia_* AUCs, per-row scores of the other sign."""
    from perta_hub.evaluation.bootstrap import row_table
    from perta_hub.evaluation.reference import read_reference
    from perta_hub.evaluation.tofu import add_privleak

    retain = evaluated["retain"]
    ou = {"forget_truth_ratio": retain["forget_truth_ratio"],
          **{a: {"agg_value": retain[a]["agg_value"], "forget": {"value_by_index": {"0": {"score": 1.0}}}}
             for a in ATTACKS}}
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(ou))
    ref = read_reference(path, "forget01")
    assert ref.mia == {} and ref.mia_auc == {a: retain[a]["agg_value"] for a in ATTACKS}
    model = copy.deepcopy(evaluated["model"])
    add_privleak(model, ref, subset=False)
    assert model["privleak"]["agg_value"] == pytest.approx(privacy.privleak(model["mia_min_k"]["agg_value"],
                                                                            retain["mia_min_k"]["agg_value"]))
    assert model["mia_zlib"]["privleak"] == pytest.approx(privacy.privleak(model["mia_zlib"]["agg_value"],
                                                                           retain["mia_zlib"]["agg_value"]))
    add_privleak(model, ref, subset=True)  # other rows than the logs' AUC: nothing to compare with
    assert model["privleak"]["agg_value"] is None and model["mia_zlib"]["privleak"] is None
    no_rows = {**model, "reference": {"source": str(path), "forget_truth_ratio": model["reference"]
                                      ["forget_truth_ratio"], "mia": {}}}
    assert "privleak" in row_table(no_rows).notes


def test_docs_state_every_metric_and_its_direction():
    from perta_hub.evaluation.bootstrap import INTERVAL_KEYS

    text = (Path(__file__).resolve().parents[2] / "docs" / "evaluate.md").read_text()
    section = text.split("### Which direction is better", 1)[1].split("\n## ", 1)[0]
    for key in INTERVAL_KEYS:  # every aggregate
        assert f"`{key}`" in section, key
    assert "d3d7cf9e6b3c125d16687d4232680d8d83548f1a" in text and privacy.__doc__ is not None
    assert "d3d7cf9e6b3c125d16687d4232680d8d83548f1a" in privacy.__doc__
