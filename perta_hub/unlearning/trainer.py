"""The unlearning ``Trainer``: forget (and retain) batches, the loss of :mod:`perta_hub.unlearning.losses`.

Everything else is ``finetune``'s Trainer set-up (:func:`perta_hub.training.trainer.train`): the same
TrainingArguments, optimizer, schedule, progress, accelerate/FSDP/DeepSpeed handling. Imports transformers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from transformers import Trainer

from perta_hub.unlearning import losses


class ForgetRetainExamples:
    """One item per forget example, with a retain example drawn at random beside it (when retain data is given).

    As the reference's ``ForgetRetainDataset`` (anchor ``forget``): the epoch length is the forget set's, the
    retain example is drawn uniformly at each access (seeded, so a run is reproducible).
    """

    def __init__(self, forget: Sequence[Any], retain: Sequence[Any] | None, seed: int) -> None:
        self.forget = list(forget)
        self.retain = list(retain) if retain else None
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self.forget[i]
        item: dict[str, Any] = {"forget": {"input_ids": list(f.input_ids), "labels": list(f.labels)}}
        if self.retain is not None:
            r = self.retain[self.rng.randrange(len(self.retain))]
            item["retain"] = {"input_ids": list(r.input_ids), "labels": list(r.labels)}
        return item


class PairCollator:
    """Right-pads the forget and the retain parts of a batch separately (:func:`perta_hub.data.collate`)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from perta_hub.data.encoding import collate

        batch = {"forget": collate([f["forget"] for f in features], self.pad_token_id, padding_side="right")}
        if "retain" in features[0]:
            batch["retain"] = collate([f["retain"] for f in features], self.pad_token_id, padding_side="right")
        return batch


class UnlearnTrainer(Trainer):
    """``Trainer`` whose loss is GradAscent, GradDiff or NPO (``method`` ``ga``/``gd``/``npo``).

    ``ref_model``: the frozen reference of NPO (the model before unlearning), put on the training device.
    The loss of each micro-batch is divided by the accumulation steps (the step's gradient is the mean over
    its micro-batches, as for ``finetune``).
    """

    def __init__(self, *args: Any, method: str, gamma: float, beta: float, retain_weight: float,
                 ref_model: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # our loss ignores num_items_in_batch: Trainer divides by accum
        self.args.include_num_input_tokens_seen = "no"  # the batch is {"forget", "retain"}: no top-level input_ids
        self.method, self.gamma, self.beta, self.retain_weight = method, gamma, beta, retain_weight
        self.ref_model = None
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    @staticmethod
    def _logits(model: Any, part: dict[str, Any]) -> Any:
        return model(input_ids=part["input_ids"], attention_mask=part["attention_mask"], use_cache=False).logits

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        import torch

        forget = inputs["forget"]
        forget_logits = self._logits(model, forget)
        retain = inputs.get("retain") if self.retain_weight > 0 else None
        retain_logits = self._logits(model, retain) if retain is not None else None
        if self.method == "ga":
            loss = losses.ga_loss(forget_logits, forget["labels"])
        elif self.method == "gd":
            loss = losses.grad_diff_loss(forget_logits, forget["labels"], retain_logits, retain["labels"],
                                         gamma=self.gamma, retain_weight=self.retain_weight)
        else:
            with torch.no_grad():
                ref_logits = self._logits(self.ref_model, forget)
            loss = losses.npo_loss(forget_logits, forget["labels"], ref_logits, beta=self.beta, gamma=self.gamma,
                                   retain_logits=retain_logits,
                                   retain_labels=None if retain is None else retain["labels"],
                                   retain_weight=self.retain_weight)
        return (loss, {"logits": forget_logits}) if return_outputs else loss
