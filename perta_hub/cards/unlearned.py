"""The card of an unlearned model written by ``perta-hub unlearn`` (GradAscent, GradDiff, NPO)."""

from __future__ import annotations

from typing import Any

from perta_hub.unlearning.methods import METHOD_NAMES


def unlearned_card(config: dict[str, Any]) -> Any:
    """The card (``ModelCard``): target, method and its weights, data sizes (never their text), recipe."""
    from huggingface_hub import ModelCardData

    from perta_hub._version import __version__
    from perta_hub.cards.render import _base_model, _render, inherited_license

    target = config.get("target", {})
    base_model = _base_model(target)
    method = METHOD_NAMES.get(config.get("method", ""), config.get("method"))
    card_data = ModelCardData(library_name="transformers", base_model=base_model,
                              tags=["perta", "machine-unlearning", f"unlearn-{config.get('method')}"],
                              **({"base_model_relation": "finetune"} if base_model else {}),
                              **inherited_license(target))
    hyper = config.get("hyperparameters", {})
    forget, retain = config.get("forget_data", {}), config.get("retain_data") or {}
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in {**hyper, **config.get("training", {})}.items())
    results = config.get("results", {})
    retain_line = (f"- retain: {retain.get('num_examples')} examples, {retain.get('num_answer_tokens')} answer tokens"
                   if retain else "- retain: none")
    body = f"""
# Unlearned model ({method})

`{target.get("source")}` after {method} unlearning, made with `perta-hub unlearn` {__version__} (transformers
`Trainer`; the loss definitions of open-unlearning, see perta-hub's `docs/unlearn.md`).

## Target

- target: `{target.get("source")}` at `{target.get("revision")}`

## Data (sizes only; the forget data is not quoted)

- forget: {forget.get("num_examples")} examples, {forget.get("num_answer_tokens")} answer tokens
{retain_line}

## Hyper-parameters

| option | value |
|---|---|
{rows}

Last-epoch loss: {results.get("final_loss")} after {results.get("steps")} steps.

Command:

```
{config.get("command", "")}
```
"""
    return _render(card_data, body)
