"""Model cards (``README.md``) for artifacts and unlearned models, made with huggingface_hub's ModelCard.

Cards state provenance and usage only; they never contain forget-set examples.
"""

from __future__ import annotations

from typing import Any

from perta_hub import __version__

PRIVACY_NOTE = (
    "**Privacy note.** This artifact is derived from the forget data: it can reveal what the model was "
    "asked to forget. Keep its repository private unless you are sure the data may be shared."
)
KIND_TAGS = {"task_vector": "task-vector", "weight_map": "weight-map", "model": "unlearned-model"}
KIND_TITLES = {"task_vector": "PerTA task vector", "weight_map": "PerTA weight map"}


def _base_model(source: dict[str, Any] | None) -> str | None:
    """A Hub repo id for ``base_model`` (local paths are not valid there)."""
    if not source or not source.get("repo_id"):
        return None
    return str(source["repo_id"])


def _datasets(config: dict[str, Any]) -> list[str] | None:
    names = []
    for key in ("forget_data", "retain_data", "data"):
        data = config.get(key)
        if isinstance(data, dict) and data.get("dataset_id"):
            names.append(str(data["dataset_id"]))
    return sorted(set(names)) or None


def _render(card_data: Any, body: str) -> Any:
    from huggingface_hub import ModelCard

    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body.strip()}\n")


def _provenance_lines(config: dict[str, Any]) -> str:
    lines = []
    for key in ("base", "finetuned", "model", "target", "task_vector", "weights"):
        item = config.get(key)
        if isinstance(item, dict) and item.get("source"):
            lines.append(f"- {key.replace('_', ' ')}: `{item['source']}` at `{item.get('revision', '?')}`")
    return "\n".join(lines)


def artifact_card(kind: str, config: dict[str, Any]) -> Any:
    """The card of a task-vector or weight-map artifact folder (``ModelCard``)."""
    from huggingface_hub import ModelCardData

    base = config.get("base") or config.get("model")
    card_data = ModelCardData(
        library_name="perta-hub",
        base_model=_base_model(base),
        tags=["perta", "machine-unlearning", KIND_TAGS[kind]],
        datasets=_datasets(config),
    )
    what = {
        "task_vector": "the difference `tau = theta_finetuned - theta_anchor`, one tensor per model parameter "
                       f"(stored as {config.get('dtype', 'float32')}).",
        "weight_map": "per-parameter importances for forgetting (`importance_forget`, I_f) and retention "
                      f"(`importance_retain`, I_r) computed with the `{config.get('method')}` method; `apply` "
                      "combines them into `w = I_f^p / (I_f^p + lam * I_r^p + eps)`.",
    }[kind]
    usage_flag = "--task-vector" if kind == "task_vector" else "--weights"
    body = f"""
# {KIND_TITLES[kind]}

Made with [perta-hub](https://github.com/perta-hub/perta-hub) {__version__}: {what}

{PRIVACY_NOTE}

## Provenance

{_provenance_lines(config)}
- parameters: {config.get("num_parameters")}

Command:

```
{config.get("command", "")}
```

## How to apply

```
perta-hub apply TARGET_MODEL {usage_flag} THIS_REPO --alpha 1.0 -o unlearned-model
```

The tensors are sharded safetensors named like the model's parameters; `perta_config.json` records every input.
"""
    return _render(card_data, body)


def model_card(config: dict[str, Any]) -> Any:
    """The card of an unlearned model written by ``apply`` (``ModelCard``)."""
    from huggingface_hub import ModelCardData

    target = config.get("target") or {}
    card_data = ModelCardData(
        library_name="transformers",
        base_model=_base_model(target),
        tags=["perta", "machine-unlearning", "unlearned-model"],
    )
    method = config.get("method", "task vector")
    body = f"""
# Unlearned model (PerTA)

`theta = theta_target - alpha * (w * tau)` with alpha = {config.get("alpha")} and method `{method}`, made with
perta-hub {__version__}.

## Inputs

{_provenance_lines(config)}

Command:

```
{config.get("command", "")}
```

## How to use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("THIS_REPO")
tokenizer = AutoTokenizer.from_pretrained("THIS_REPO")
```
"""
    return _render(card_data, body)
