"""The card of a model ``finetune`` trained on data that is not (declared as) forget data: a target, a retain
model, any supervised fine-tune. It says what was trained on what; the forget-data wording and the private
default are reserved for the model ``task-vector MODEL --forget DATA`` fine-tunes (:mod:`perta_hub.cards.finetuned`).
"""

from __future__ import annotations

from typing import Any


def trained_card(config: dict[str, Any]) -> Any:
    """The card (``ModelCard``): base, data (spec and sizes, never its text), recipe, what to do next."""
    from huggingface_hub import ModelCardData

    from perta_hub._version import __version__
    from perta_hub.cards.render import _base_model, _datasets, _render, inherited_license

    training = config.get("training", {})
    data = config.get("data", {})
    lora = config.get("lora")
    base = config.get("base", {})
    base_model = _base_model(base)
    card_data = ModelCardData(
        library_name="transformers", base_model=base_model,
        tags=["perta", "fine-tuned"] + (["lora"] if lora else []), datasets=_datasets(config),
        **({"base_model_relation": "finetune"} if base_model else {}), **inherited_license(base),
    )
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in training.items())
    method = (f"LoRA adapters (rank {lora['rank']}, alpha {lora['alpha']}, targets `{lora['target_modules']}`), "
              "merged into the weights; the adapter itself is in `adapter/`" if lora else "full fine-tuning")
    results = config.get("results", {})
    body = f"""
# Fine-tuned model

`{base.get("source")}` fine-tuned on `{data.get("spec")}` with {method}, made with `perta-hub finetune`
{__version__} (transformers `Trainer`, loss on the answer tokens only).

Evaluate it, or unlearn part of its training data from it (it is then the *target*):

```
perta-hub evaluate THIS_REPO
perta-hub task-vector THIS_REPO --forget FORGET_DATA -o task-vector
```

**Data note.** This model reproduces its training data more readily than its base; if that data is private,
keep the repository private.

## Base model

- base: `{base.get("source")}` at `{base.get("revision")}`

## Data

- `{data.get("spec")}`: {data.get("num_examples")} examples ({data.get("num_rows")} rows), \
{data.get("num_answer_tokens")} answer tokens, fields `{data.get("question_field")}` / `{data.get("answer_field")}`, \
token sha256 `{data.get("sha256")}`

## Hyper-parameters

| option | value |
|---|---|
{rows}

Last-epoch training loss: {results.get("train_loss")} after {results.get("steps")} steps.

Command:

```
{config.get("command", "")}
```
"""
    return _render(card_data, body)
