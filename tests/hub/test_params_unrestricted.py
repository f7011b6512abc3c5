"""``compute-weights --params``: what ``apply`` does with the parameters the weight map leaves out.

By default (``"unrestricted": "w=0"``) they are copied from the target unchanged (bit-identical); with
``--unrestricted-rest`` (``"w=1"``) they get plain task arithmetic; a weight map made before the key
existed keeps w = 1, as it was made for.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import load_state
from tests.hub.test_hub import error_line, make_task_vector, run_cli

PARAMS = r"mlp\."


def weight_map(target: Path, out: Path, **kwargs: Any) -> Path:
    from perta_hub.importance.weight_map import compute_weights

    compute_weights(str(target), "tofu:forget01", "tofu:retain99", out, method="grad", max_examples=4,
                    dtype="float32", device="cpu", params=PARAMS, progress=False, echo=lambda _line: None, **kwargs)
    return out


def apply_one(target: Path, tv: Path, out: Path, weights: Path | None) -> dict[str, torch.Tensor]:
    from perta_hub.merge.apply import apply

    apply(target, tv, alphas=[1.0], out_dir=out, weights=weights, device="cpu", progress=False)
    return load_state(out)


def test_params_rest_is_unchanged_by_default_or_w1(make_model: Any, tmp_path: Path) -> None:
    target = make_model("base", seed=0)
    tv = make_task_vector(make_model, tmp_path)  # base (= target) and tuned
    original = load_state(target)
    covered = {n for n in original if re.search(PARAMS, n)}
    assert covered and covered != set(original)

    w0 = weight_map(target, tmp_path / "wm0")
    w1 = weight_map(target, tmp_path / "wm1", unrestricted_rest=True)
    for folder, value, words in ((w0, "w=0", "w = 0, left unchanged"), (w1, "w=1", "w = 1, plain task arithmetic")):
        config = json.loads((folder / "perta_config.json").read_text())
        assert config["params"] == PARAMS and config["unrestricted"] == value
        assert list(config).index("unrestricted") == list(config).index("params") + 1
        assert words in (folder / "README.md").read_text()

    plain = apply_one(target, tv, tmp_path / "plain", None)
    out0 = apply_one(target, tv, tmp_path / "out0", w0)
    out1 = apply_one(target, tv, tmp_path / "out1", w1)
    for name in original:
        if name in covered:  # weighted the same way in both
            assert torch.equal(out0[name], out1[name])
        else:
            assert out0[name].dtype == original[name].dtype
            assert out0[name].numpy().tobytes() == original[name].numpy().tobytes()  # bit-identical copy
            assert torch.equal(out1[name], plain[name])
    assert any(not torch.equal(out0[n], original[n]) for n in covered)  # the covered ones are unlearned
    assert any(not torch.equal(out1[n], original[n]) for n in set(original) - covered)  # w = 1 moves the rest
    recorded = {json.loads((tmp_path / o / "perta_config.json").read_text())["weights"].get("unrestricted")
                for o in ("out0", "out1")}
    assert recorded == {"w=0", "w=1"}

    # a weight map made before the key existed was made for w = 1, and keeps it
    legacy = tmp_path / "legacy"
    shutil.copytree(w0, legacy)
    config = json.loads((legacy / "perta_config.json").read_text())
    del config["unrestricted"]
    (legacy / "perta_config.json").write_text(json.dumps(config))
    old = apply_one(target, tv, tmp_path / "out-legacy", legacy)
    assert all(torch.equal(old[n], out1[n]) for n in original)
    assert "unrestricted" not in json.loads((tmp_path / "out-legacy" / "perta_config.json").read_text())["weights"]


def test_unrestricted_rest_needs_params(make_model: Any, tmp_path: Path) -> None:
    target = make_model("base")
    result = run_cli("compute-weights", str(target), "--forget", "tofu:forget01", "--retain", "tofu:retain99",
                     "--method", "grad", "-o", str(tmp_path / "wm"), "--unrestricted-rest")
    assert result.exit_code != 0
    assert "--unrestricted-rest only applies with --params" in error_line(result)
    assert not (tmp_path / "wm").exists()


@pytest.mark.parametrize("value", ["w=2", 1])
def test_unknown_unrestricted_value_is_refused(value: Any, make_model: Any, tmp_path: Path) -> None:
    from perta_hub.errors import PertaError

    target = make_model("base", seed=0)
    tv = make_task_vector(make_model, tmp_path)
    wm = weight_map(target, tmp_path / "wm")
    config = json.loads((wm / "perta_config.json").read_text())
    config["unrestricted"] = value
    (wm / "perta_config.json").write_text(json.dumps(config))
    with pytest.raises(PertaError, match="unrestricted"):
        apply_one(target, tv, tmp_path / "out", wm)
    assert not (tmp_path / "out").exists()
