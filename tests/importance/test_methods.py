"""The importance-method registry: --method's choices and help, the docs' table and the engine all read it."""

from __future__ import annotations

import pytest
import torch

from perta_hub.errors import InputError
from perta_hub.importance import methods
from perta_hub.importance.gradients import accumulate_importance
from perta_hub.options.compute_weights import ComputeWeightsOptions
from tests.helpers import REPO
from tests.importance.test_importance import _assert_close_maps, _collate, _load, _token_examples


def test_choices_help_and_docs_come_from_the_registry():
    flag = ComputeWeightsOptions.flag("method")
    assert flag.type.choices == tuple(methods.METHODS) == ("grad", "fisher")
    for m in methods.METHODS.values():
        assert f"{m.name}: {m.help}" in flag.help
    # the docs' table is the registry's (regenerate it with methods.markdown_table())
    assert methods.markdown_table() in (REPO / "docs" / "compute-weights.md").read_text()
    # the recorded default eps: merge.math's gradient scale in each method's units
    assert (methods.METHODS["grad"].eps, methods.METHODS["fisher"].eps) == (1e-12, 1e-24)


def test_an_unknown_method_is_one_line():
    with pytest.raises(InputError, match=r"^method: 'l2' is not one of grad, fisher$"):
        accumulate_importance(torch.nn.Linear(2, 2), [], method="l2", progress=False)
    with pytest.raises(InputError, match=r"^--method: 'l2' is not one of grad, fisher$"):
        ComputeWeightsOptions(method="l2")


def test_a_registered_method_runs_in_the_engine(make_model, monkeypatch):
    # a method is one ImportanceMethod and its name in METHODS: here the mean of per-example |g_i|
    mean_abs = methods.ImportanceMethod(
        name="mean-abs", help="I = mean over examples of |per-example gradient|", formula="`(1/N) sum_i |g_i|`",
        paper_name="-", per_example=True, fold=lambda acc, g: acc.add_(g.abs()), finish=None, power=1)
    monkeypatch.setitem(methods.METHODS, "mean-abs", mean_abs)
    model = _load(make_model("m"))
    examples = _token_examples(5)
    result = accumulate_importance(model, [_collate(examples[:2]), _collate(examples[2:])], method="mean-abs",
                                   progress=False)
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for ids, labels in examples:
        grads = torch.autograd.grad(model(input_ids=ids[None], labels=labels[None]).loss, list(params.values()))
        for name, g in zip(params, grads, strict=True):
            total[name] += g.double().abs()
    _assert_close_maps(result.importance, {n: (t / len(examples)).float() for n, t in total.items()})
