"""Low-rank (LoRA factors) task vectors: the same bytes as the dense form from ``apply`` and ``verify``, far smaller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from perta_hub.merge.low_rank import GROUP_A, GROUP_B, artifact_bytes


def make_adapter(base: Path, out: Path, *, seed: int = 0, rank: int = 4, fan_targets: bool = False) -> Path:
    """A peft LoRA adapter of ``base`` with random (non-zero) A and B, as ``finetune --lora-rank`` saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj", "down_proj"],
                        lora_dropout=0.0, bias="none", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft_model.save_pretrained(out)
    return out


def edit_group(folder: Path, prefix: str, edit: Any) -> None:
    """Rewrite the shard(s) of ``folder``/``prefix`` with ``edit(state) -> state`` (tampering, in tests)."""
    from safetensors.torch import load_file, save_file

    for path in folder.glob(f"{prefix}*.safetensors"):
        save_file(edit(load_file(path)), path, metadata={"format": "pt"})


def weight_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


@pytest.fixture
def forms(make_model: Any, tmp_path: Path) -> dict[str, Path]:
    from perta_hub.merge.lora_delta import lora_task_vector

    base = make_model("base", seed=0, max_shard_size="40KB")
    adapter = make_adapter(base, tmp_path / "adapter")
    dense = lora_task_vector(base, adapter, tmp_path / "dense", low_rank=False, max_shard_size="40KB",
                             progress=False)
    low = lora_task_vector(base, adapter, tmp_path / "low", max_shard_size="40KB", progress=False)
    return {"base": base, "adapter": adapter, "dense": dense, "low": low}


def test_factors_are_stored_and_recorded(forms: dict[str, Path]) -> None:
    low = forms["low"]
    names = {p.name.split("-")[0].split(".")[0] for p in low.glob("*.safetensors")}
    assert names == {GROUP_A, GROUP_B}
    cfg = json.loads((low / "perta_config.json").read_text())
    assert cfg["lora"]["stored"] == "factors" and cfg["lora"]["num_adapted_tensors"] == 6
    assert artifact_bytes(low) * 3 < artifact_bytes(forms["dense"])


@pytest.mark.parametrize("with_weights", [False, True])
def test_apply_gives_the_dense_form_bytes(forms: dict[str, Path], tmp_path: Path, with_weights: bool) -> None:
    from perta_hub.merge.apply import apply
    from tests.helpers import make_weight_map

    weights = make_weight_map(tmp_path / "wm", forms["base"]) if with_weights else None
    outs = {}
    for form in ("dense", "low"):
        outs[form] = apply(forms["base"], forms[form], alphas=[0.7, 1.5], out_dir=tmp_path / f"out-{form}",
                           weights=weights, device="cpu", max_shard_size="40KB", progress=False)
    for a, b in zip(outs["dense"], outs["low"], strict=True):
        assert weight_files(a) == weight_files(b)
        assert len(weight_files(a)) > 1


def test_verify_recomputes_both_forms(forms: dict[str, Path], tmp_path: Path) -> None:
    from perta_hub.merge.apply import apply
    from perta_hub.verification.api import verify

    for form in ("dense", "low"):
        result = verify(forms[form], recompute=True, privacy_level=False)  # no forget data recorded to scan for
        assert result.ok, result
        tensors = [c for c in result.checks if c.name == "tensors"]
        assert len(tensors) == 1 and tensors[0].status == "pass", result.checks
        out = apply(forms["base"], forms[form], alphas=[1.0], out_dir=tmp_path / f"m-{form}", weights=None,
                    device="cpu", max_shard_size="40KB", progress=False)[0]
        result = verify(out, recompute=True, privacy_level=False)
        assert result.ok, result


def test_a_tampered_factor_fails_verify(forms: dict[str, Path]) -> None:
    from perta_hub.verification.api import verify

    edit_group(forms["low"], GROUP_B, lambda s: {k: v * 2 if k.endswith("q_proj.weight") else v for k, v in s.items()})
    result = verify(forms["low"], recompute=True)
    assert not result.ok
    assert [c.status for c in result.checks if c.name == "tensors"] == ["fail"], result.checks


def test_a_factor_without_its_pair_is_refused(forms: dict[str, Path], tmp_path: Path) -> None:
    from perta_hub.errors import CheckpointError
    from perta_hub.merge.apply import apply

    edit_group(forms["low"], GROUP_A, lambda s: {k: v for k, v in s.items() if not k.endswith("v_proj.weight")})
    with pytest.raises(CheckpointError, match="only one of its LoRA factors"):
        apply(forms["base"], forms["low"], alphas=[1.0], out_dir=tmp_path / "x", weights=None, device="cpu",
              max_shard_size="40KB", progress=False)
