"""The TOFU metrics through Hugging Face ``evaluate``: loaded offline from the package, equal to metrics.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from perta_hub.errors import InputError
from perta_hub.evaluation import METRICS, load_metric, metric_path, metrics
from tests.helpers import REPO

GENERATIONS = ["the cats sat down", "beta delta", "Nobody knows.", "She wrote three novels in Paris"]
ANSWERS = ["The cat sat", "alpha beta gamma delta", "He was born in 1956.", "She wrote novels in Paris, France"]
CORRECT = [math.log(2), 0.3, 2.5, 0.0]
PERTURBED = [[math.log(4), math.log(16)], [0.1, 0.2, 0.5], [1.0, 4.0, 3.0, 2.0, 2.2], [0.7]]


def expected_values() -> dict[str, dict]:
    """What metrics.py gives on the fixed inputs above."""
    rouge = [metrics.rouge_scores(a, g) for g, a in zip(GENERATIONS, ANSWERS, strict=True)]
    ratios = [metrics.truth_ratio(c, p) for c, p in zip(CORRECT, PERTURBED, strict=True)]
    model, retain = [0.2, 0.5, 0.9, 1.3], [0.4, 1.1, 1.7, 2.0]
    fq = metrics.forget_quality(model, retain)
    return {
        "rouge": {"rougeL_recall": metrics.mean(s["rougeL_recall"] for s in rouge), "scores": rouge},
        "truth_forget": {"truth_ratio": metrics.truth_ratio_forget(ratios), "scores": ratios},
        "truth_retain": {"truth_ratio": metrics.truth_ratio_retain(ratios), "scores": ratios},
        "fq": {"forget_quality": fq, "log10": metrics.log10_or_none(fq), "inputs": [model, retain]},
    }


def compute_all(load) -> dict[str, dict]:
    """Each metric through ``evaluate``'s compute(); ``load(name)`` returns the loaded module."""
    exp = expected_values()
    rouge = load("tofu_rouge").compute(predictions=GENERATIONS, references=ANSWERS)
    tr = load("tofu_truth_ratio")
    model, retain = exp["fq"]["inputs"]
    return {
        "rouge": rouge,
        "truth_forget": tr.compute(correct_avg_nll=CORRECT, perturbed_avg_nlls=PERTURBED),
        "truth_retain": tr.compute(correct_avg_nll=CORRECT, perturbed_avg_nlls=PERTURBED, split="retain"),
        "fq": load("tofu_forget_quality").compute(predictions=model, references=retain),
    }


def assert_equal_to_metrics_py(got: dict[str, dict]) -> None:
    exp = expected_values()
    assert got["rouge"]["rougeL_recall"] == exp["rouge"]["rougeL_recall"]
    assert got["rouge"]["scores"] == exp["rouge"]["scores"]
    assert 0 < got["rouge"]["rougeL_recall"] < 1  # the inputs exercise partial matches
    for key in ("truth_forget", "truth_retain"):
        assert got[key]["truth_ratio"] == exp[key]["truth_ratio"], key
        assert got[key]["scores"] == exp[key]["scores"], key
    assert got["truth_forget"]["truth_ratio"] != got["truth_retain"]["truth_ratio"]
    assert got["fq"]["forget_quality"] == exp["fq"]["forget_quality"]
    assert got["fq"]["log10"] == exp["fq"]["log10"]
    assert 0 < got["fq"]["forget_quality"] < 1


def test_load_metric_equals_metrics_py():
    assert_equal_to_metrics_py(compute_all(load_metric))
    # short names, and the file paths that evaluate.load takes
    assert metric_path("rouge") == metric_path("tofu_rouge")
    assert [metric_path(m).name for m in METRICS] == [f"{m}.py" for m in METRICS]
    assert all(metric_path(m).is_file() for m in METRICS)


def test_truth_ratio_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="split must be 'forget' or 'retain', got 'ra'"):
        load_metric("truth_ratio").compute(correct_avg_nll=CORRECT, perturbed_avg_nlls=PERTURBED, split="ra")


def test_unknown_metric_name():
    with pytest.raises(InputError) as err:
        load_metric("bleu")
    assert str(err.value) == ("unknown TOFU metric 'bleu'; use one of tofu_rouge, tofu_truth_ratio, "
                              "tofu_forget_quality")


SCRIPT = """
import json, sys
import evaluate
from perta_hub.evaluation import metric_path
sys.path.insert(0, {repo!r})
from tests.evaluation.test_hf_metrics import compute_all
print(json.dumps(compute_all(lambda name: evaluate.load(str(metric_path(name))))))
"""


def test_evaluate_load_works_offline_with_an_empty_cache(tmp_path):
    """``evaluate.load(<file>)`` in a fresh process: Hub offline, empty HF cache, nothing downloaded."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "HF_MODULES_CACHE": str(tmp_path / "hf" / "modules"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=str(REPO))], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_equal_to_metrics_py(json.loads(proc.stdout.strip().splitlines()[-1]))
    # the module was copied into the (empty) modules cache of this process, not fetched
    assert any((tmp_path / "hf" / "modules").rglob("tofu_rouge.py"))


def test_package_works_without_evaluate(tmp_path):
    """``evaluate`` is imported only by load_metric: with it unimportable the package still imports and runs."""
    script = """
import sys
sys.modules["evaluate"] = None  # import evaluate -> ImportError
import perta_hub, perta_hub.evaluation, perta_hub.evaluation.tofu
from perta_hub.evaluation import metrics, load_metric
from perta_hub.errors import InputError
assert metrics.truth_ratio(0.5, [0.5]) > 0
try:
    load_metric("rouge")
except InputError as err:
    print(err)
"""
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "the TOFU metric 'rouge' needs the evaluate library: pip install evaluate"
