"""Model cards (``README.md``) for artifacts and unlearned models, made with huggingface_hub's ModelCard.

Cards state provenance and usage only; they never contain forget-set examples (``find_forget_examples``
checks a card against the forget data). The license of the base model is inherited when its card can
be read locally (a local folder, or the HF cache of a Hub model); unlearned models declare
``base_model_relation: merge`` (their weights are arithmetic on the target's, no training).
``hub_metadata_problems`` applies the Hub's metadata rules offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perta_hub._version import __version__
from perta_hub.records import RECORDS, ModelRecord

PRIVACY_NOTE = (
    "**Privacy note.** This artifact is derived from the forget data: it can reveal what the model was "
    "asked to forget. Keep its repository private unless you are sure the data may be shared."
)


def _base_model(source: dict[str, Any] | None) -> str | None:
    """A Hub repo id for ``base_model`` (local paths are not valid there)."""
    if not source or not source.get("repo_id"):
        return None
    return str(source["repo_id"])


def inherited_license(source: dict[str, Any] | None, card: Path | None = None) -> dict[str, str]:
    """``license`` (and ``license_name`` / ``license_link``) of a model's card, read without network.

    ``source`` is a provenance record (``{"source", "repo_id", "revision"}``): a local folder's
    ``README.md``, or the ``README.md`` of a Hub model in the HF cache (downloaded with its weights);
    ``card``: the model's ``README.md`` where the caller has it (a Hub model opened from its headers keeps it in
    its staging folder), read first. Returns an empty dict when the card or its license is unknown.
    """
    if not source:
        return {}
    card_path: Path | None = None
    local = Path(str(source.get("source") or "")).expanduser()
    if card is not None and card.is_file():
        card_path = card
    elif source.get("source") and local.exists():
        card_path = (local if local.is_dir() else local.parent) / "README.md"
    elif source.get("repo_id"):
        from huggingface_hub import try_to_load_from_cache

        revision = source.get("revision")
        revision = revision if isinstance(revision, str) and re.fullmatch(r"[0-9a-f]{40}", revision) else None
        cached = try_to_load_from_cache(str(source["repo_id"]), "README.md", revision=revision)
        card_path = Path(cached) if isinstance(cached, str) else None
    if card_path is None or not card_path.is_file():
        return {}
    from huggingface_hub import metadata_load

    try:
        meta = metadata_load(card_path) or {}
    except Exception:  # noqa: BLE001 - an unreadable base card only means "license unknown"
        return {}
    return {k: meta[k] for k in ("license", "license_name", "license_link") if isinstance(meta.get(k), str)}


def _datasets(config: dict[str, Any]) -> list[str] | None:
    names = []
    for key in ("forget_data", "retain_data", "data"):
        data = config.get(key)
        if isinstance(data, dict) and data.get("dataset_id"):
            names.append(str(data["dataset_id"]))
    return sorted(set(names)) or None


def preload() -> None:
    """Import the card renderer (``huggingface_hub.ModelCard``, about 0.3 s) ahead of use, e.g. in a
    thread while a merge streams."""
    from huggingface_hub import ModelCard  # noqa: F401


def _render(card_data: Any, body: str) -> Any:
    from huggingface_hub import ModelCard

    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body.strip()}\n")


def _provenance_lines(config: dict[str, Any]) -> str:
    """One line per input of the record's kind (its ``inputs``, in their order), as ``verify`` reads them back."""
    lines = []
    for key in RECORDS[config["kind"]].inputs:
        item = config.get(key)
        if isinstance(item, dict) and item.get("source"):
            lines.append(f"- {key.replace('_', ' ')}: `{item['source']}` at `{item.get('revision', '?')}`")
    return "\n".join(lines)


def _restriction_line(config: dict[str, Any]) -> str:
    """For a weight map restricted with ``--params``: which parameters it covers and what ``apply`` does with
    the others (``unrestricted``: ``w=0`` leaves them unchanged, ``w=1`` applies plain task arithmetic)."""
    if not config.get("params"):
        return ""
    rest = {"w=0": "w = 0, left unchanged by `apply`",
            "w=1": "w = 1, plain task arithmetic in `apply`"}.get(str(config.get("unrestricted")), "w = 1 in `apply`")
    return f"\n- restricted to parameters matching `{config['params']}`; the others: {rest}"


class _Values(dict):  # type: ignore[type-arg]
    """A record's values for :meth:`str.format_map`; a key it does not hold reads ``None``."""

    def __missing__(self, key: str) -> None:
        return None


def artifact_card(kind: str, config: dict[str, Any]) -> Any:
    """The card of an artifact folder (task vector, weight map: ``ModelCard``); its tag, title, summary, privacy
    note and ``apply`` option are the kind's record class's."""
    from huggingface_hub import ModelCardData

    cls = RECORDS[kind]
    base = config.get("base") or config.get("model")
    card_data = ModelCardData(
        library_name="perta-hub",
        base_model=_base_model(base),
        tags=["perta", "machine-unlearning", str(cls.card_tag)],
        datasets=_datasets(config),
        **inherited_license(base),
    )
    what = str(cls.card_summary).format_map(_Values(config))
    privacy = f"\n{PRIVACY_NOTE}\n" if cls.private else ""
    body = f"""
# {cls.card_title}

Made with perta-hub {__version__}: {what}
{privacy}
## Provenance

{_provenance_lines(config)}
- parameters: {config.get("num_parameters")}{_restriction_line(config)}

Command:

```
{config.get("command", "")}
```

## How to apply

```
perta-hub apply TARGET_MODEL {cls.apply_option} THIS_REPO --alpha 1.0 -o unlearned-model
```

The tensors are sharded safetensors named like the model's parameters; `perta_config.json` records every input.
{_selectivity_section(config.get("selectivity"))}"""
    return _render(card_data, body)


def _selectivity_section(selectivity: dict[str, Any] | None) -> str:
    """The weight map's selectivity table (:func:`perta_hub.importance.summary.selectivity_markdown`)."""
    if not selectivity:
        return ""
    from perta_hub.importance.summary import selectivity_markdown

    return "\n## Selectivity of w\n\n" + selectivity_markdown(selectivity)


def model_card(config: dict[str, Any], eval_results: list[Any] | None = None, *,
               target_card: Path | None = None) -> Any:
    """The card of an unlearned model written by ``apply`` (``ModelCard``).

    ``eval_results``: ``huggingface_hub.EvalResult`` entries (e.g. from ``perta-hub evaluate``), written
    as ``model-index``; ``target_card``: the target's ``README.md`` (its license is inherited).
    """
    from huggingface_hub import ModelCardData

    target = config.get("target") or {}
    base_model = _base_model(target)
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        tags=["perta", "machine-unlearning", str(ModelRecord.card_tag)],
        eval_results=eval_results or None,
        model_name=(base_model.split("/")[-1] + "-perta") if eval_results and base_model else (
            "perta-unlearned-model" if eval_results else None),
        **({"base_model_relation": "merge"} if base_model else {}),
        **inherited_license(target, target_card),
    )
    method = config.get("method", "task vector")
    body = f"""
# {ModelRecord.card_title}

`theta = theta_target - alpha * (w * tau)` with alpha = {config.get("alpha")} and method `{method}`, made with
perta-hub {__version__}.

## Inputs

{_provenance_lines(config)}

Command:

```
{config.get("command", "")}
```
{tune_section(config.get("tune"))}
## How to use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("THIS_REPO")
tokenizer = AutoTokenizer.from_pretrained("THIS_REPO")
```
"""
    return _render(card_data, body)


def tune_section(tune: dict[str, Any] | None) -> str:
    """The card's "Choosing alpha" section for a model chosen by ``perta-hub tune``: the rule, every alpha
    tried with its signals (table) and the plot (``tune.png`` beside the card); "" for other models."""
    if not tune:
        return ""
    cols = [k for k in ("forget_nll", "forget_prob", "forget_rouge", "retain_nll", "retain_prob")
            if any(k in p for p in tune.get("points", []))]
    head = "| alpha | stage | " + " | ".join(cols) + " | utility / target | kept | chosen |"
    rows = [head, "|" + "---|" * (len(cols) + 5)]
    ref = tune.get("reference") or {}
    rows.append("| 0 (target) | reference | " + " | ".join(f"{ref[k]:.4g}" if k in ref else "" for k in cols)
                + " | 1 | yes | |")
    for p in sorted(tune.get("points", []), key=lambda p: p["alpha"]):
        ratio = p.get("utility_ratio")
        rows.append(f"| {p['alpha']:g} | {p['stage']} | " + " | ".join(f"{p[k]:.4g}" if k in p else "" for k in cols)
                    + f" | {'' if ratio is None else f'{ratio:.3f}'} | {'yes' if p['feasible'] else 'no'} | "
                    + ("**chosen**" if p["alpha"] == tune.get("chosen") else "") + " |")
    plot = f"\n\n![alpha search]({tune['plot']})" if tune.get("plot") else ""
    return (f"\n## Choosing alpha\n\nalpha = {tune.get('chosen')} was chosen by `perta-hub tune`: {tune.get('rule')} "
            f"(budget {tune.get('budget')}, {len(tune.get('points', []))} alphas evaluated in memory on "
            f"{(tune.get('data') or {}).get('forget', {}).get('examples', '?')} forget and "
            f"{(tune.get('data') or {}).get('retain', {}).get('examples', '?')} retain examples).\n\n"
            + "\n".join(rows) + plot + "\n")


# -- checks ---------------------------------------------------------------------------------------------

HUB_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def hub_metadata_problems(card: Any) -> list[str]:
    """Problems the Hub's card validation would report, checked offline (empty list: valid).

    ``card``: a ``ModelCard`` or the text of a ``README.md``. Checks that the YAML header parses,
    ``model-index`` parses into eval results, ``base_model`` is a repo id (or a list of them),
    ``base_model_relation`` is one of the Hub's values and has a ``base_model``, and that ``license``,
    ``library_name``, ``tags`` and ``datasets`` have the types the Hub expects.
    """
    import yaml
    from huggingface_hub import ModelCardData

    text = card if isinstance(card, str) else str(card)
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return ["the card has no YAML metadata header"]
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as err:
        return [f"the YAML header does not parse: {str(err).splitlines()[0]}"]
    if not isinstance(meta, dict):
        return ["the YAML header is not a mapping"]
    problems = []
    for key in ("license", "license_name", "license_link", "library_name", "base_model_relation"):
        if key in meta and not isinstance(meta[key], str):
            problems.append(f"{key} must be a string")
    for key in ("tags", "datasets"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            problems.append(f"{key} must be a string or a list of strings")
    base = meta.get("base_model")
    bases = [base] if isinstance(base, str) else base
    if base is not None and not (isinstance(bases, list) and all(
            isinstance(b, str) and re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", b) for b in bases)):
        problems.append("base_model must be a Hub repo id (or a list of them), not a local path")
    relation = meta.get("base_model_relation")
    if relation is not None and relation not in HUB_RELATIONS:
        problems.append(f"base_model_relation must be one of {', '.join(HUB_RELATIONS)}")
    if relation is not None and base is None:
        problems.append("base_model_relation needs base_model")
    if meta.get("license") == "other" and not meta.get("license_name"):
        problems.append("license: other needs license_name")
    if "model-index" in meta:
        try:
            ModelCardData(**{"model-index": meta["model-index"]})
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            cause = err.__context__ if isinstance(err, ValueError) and err.__context__ is not None else err
            problems.append(f"model-index does not parse ({type(cause).__name__}: {cause})")
    return problems


def find_forget_examples(card: Any, texts: Iterable[str]) -> list[int]:
    """Indices of the forget-set texts (questions, answers) that a card quotes: the rule ``push`` and ``verify``
    share (:func:`perta_hub.hub.card_check.find_forget_examples`: normalised text, 8 consecutive words)."""
    from perta_hub.hub import card_check

    return card_check.find_forget_examples(card, texts)
