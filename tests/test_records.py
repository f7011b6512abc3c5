"""Typed records: every perta_config.json key checked on read, one line naming the key; exact round trips."""

from __future__ import annotations

import json

import pytest

from perta_hub.errors import CheckpointError
from perta_hub.records import ModelRecord, TaskVectorRecord, WeightMapRecord, parse_record, read_record

MODEL = {"kind": "model", "alpha": 1.0, "method": "tv", "target": {"source": "t", "repo_id": None, "revision": "r"},
         "task_vector": {"source": "tv", "revision": "sha256:0", "repo_id": None}, "weights": None, "device": "cpu",
         "run_id": "abc"}


@pytest.mark.parametrize(("change", "message"), [
    ({"alpha": "1"}, "key 'alpha' must be a number, got a string (\"1\")"),
    ({"alpha": True}, "key 'alpha' must be a number, got a boolean (true)"),
    ({"target": ["t"]}, "key 'target' must be an object, got a list ([\"t\"])"),
    ({"target": {"repo_id": None, "revision": "r"}}, "key 'target.source' is missing"),
    ({"task_vector": {"source": "tv", "revision": 3}}, "key 'task_vector.revision' must be a string, got an integer (3)"),
    ({"weights": {"source": "w", "revision": "r", "method": "grad", "p": "2"}}, "key 'weights.p' must be a number"),
    ({"extra_key": 1}, "key 'extra_key' is not a known key"),
    ({"kind": "unlearned"}, "unknown kind 'unlearned'"),
])
def test_a_bad_record_is_one_line_naming_the_key(change, message):
    with pytest.raises(CheckpointError) as err:
        parse_record({**MODEL, **change}, "x/perta_config.json")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("x/perta_config.json")


def test_missing_required_key_and_non_object():
    with pytest.raises(CheckpointError, match="key 'task_vector' is missing"):
        parse_record({k: v for k, v in MODEL.items() if k != "task_vector"})
    with pytest.raises(CheckpointError, match="is not a JSON object"):
        parse_record([MODEL])
    with pytest.raises(CheckpointError, match="key 'dtype' must be one of 'float32', 'bfloat16', 'float16'"):
        parse_record({"kind": "task_vector", "dtype": "int8"})


def test_round_trip_keeps_key_order_and_leaves_unset_keys_out(tmp_path):
    record = parse_record(MODEL)
    assert isinstance(record, ModelRecord) and record.alpha == 1.0 and record.target.source == "t"
    assert json.loads(record.to_json()) == {"perta_hub_version": record.perta_hub_version, **MODEL}
    assert list(json.loads(record.to_json())) == ["perta_hub_version", *MODEL]
    published = record.with_hub({"repo_id": "me/m"})
    assert list(published.to_dict())[-2:] == ["run_id", "hub"]
    (tmp_path / "perta_config.json").write_text(published.to_json())
    assert read_record(tmp_path) == published
    wm = WeightMapRecord.build({"method": "grad", "model_config": {"model_type": "llama"}, "p": 1})
    assert wm.p == 1.0 and isinstance(wm.p, float) and "lam" not in wm.to_dict()
    assert wm.to_dict()["model_config"] == {"model_type": "llama"}


def test_unreadable_files_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="is not a perta-hub output"):
        read_record(tmp_path)
    (tmp_path / "perta_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        read_record(tmp_path)
    with pytest.raises(CheckpointError, match="the task_vector record: key 'num_parameters' must be an integer"):
        TaskVectorRecord.build({"dtype": "float32", "num_parameters": 1.5})
