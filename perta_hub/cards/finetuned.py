"""The card of a fine-tuned model (``perta-hub finetune``): base, data, hyper-parameters and a privacy note."""

from __future__ import annotations

from typing import Any

FINETUNED_PRIVACY_NOTE = (
    "**Privacy note.** This model was fine-tuned on the forget data: it reproduces that data more readily "
    "than its base. Keep its repository private unless the data may be shared."
)


def finetuned_card(config: dict[str, Any]) -> Any:
    """The card (``ModelCard``) of a fine-tuned model: base, data, hyper-parameters, privacy note."""
    from huggingface_hub import ModelCardData

    from perta_hub._version import __version__
    from perta_hub.cards.render import _base_model, _datasets, _render, inherited_license

    training = config.get("training", {})
    data = config.get("data", {})
    lora = config.get("lora")
    base_model = _base_model(config.get("base"))
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        tags=["perta", "machine-unlearning", "forget-set-finetuned"] + (["lora"] if lora else []),
        datasets=_datasets(config),
        **({"base_model_relation": "finetune"} if base_model else {}),
        **inherited_license(config.get("base")),
    )
    base = config.get("base", {})
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in training.items())
    method = (f"LoRA adapters (rank {lora['rank']}, alpha {lora['alpha']}, targets `{lora['target_modules']}`), "
              "merged into the weights; the adapter itself is in `adapter/`" if lora else "full fine-tuning")
    results = config.get("results", {})
    body = f"""
# Forget-set fine-tuned model (PerTA `theta_ft`)

`{base.get("source")}` fine-tuned on the forget data with {method}, made with perta-hub {__version__}
(transformers `Trainer`). It is the `theta_ft` of the task vector `tau = theta_ft - theta_anchor`:

```
perta-hub task-vector --base {base.get("source")} --finetuned THIS_REPO -o task-vector
```

{FINETUNED_PRIVACY_NOTE}

## Base model

- base: `{base.get("source")}` at `{base.get("revision")}`

## Data

- `{data.get("spec")}`: {data.get("num_examples")} examples ({data.get("num_rows")} rows), \
{data.get("num_answer_tokens")} answer tokens, fields `{data.get("question_field")}` / `{data.get("answer_field")}`, \
token sha256 `{data.get("sha256")}`
- loss on the answer tokens only (prompt masked), formatting of `perta_hub.data` (TOFU chat template or \
"Question: ... Answer: ...")

## Hyper-parameters

| option | value |
|---|---|
{rows}

Final mean training loss: {results.get("train_loss")} after {results.get("steps")} steps.

Command:

```
{config.get("command", "")}
```
"""
    return _render(card_data, body)
