"""perta_hub.data: loading, prompt/label construction, subsampling, collation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from perta_hub.data.encoding import (
    DATE_STRING,
    IGNORE_INDEX,
    SYSTEM_PROMPT,
    EncodedQA,
    collate,
    count_answer_tokens,
    encode_dataset,
    encode_prompt,
    encode_qa,
)
from perta_hub.data.loading import load_qa, subsample
from perta_hub.errors import DataError

Q = "Who wrote the novel 'Blue Harbour'?"
A = "The novel was written by Basil Mahfouz Al-Kuwaiti."


def _answer_ids(tok, ids: list[int], labels: list[int]) -> list[int]:
    return [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]


def test_chat_labels_cover_exactly_answer_and_end_of_turn(tokenizer):
    enc = encode_qa(tokenizer, Q, A)
    eot = tokenizer.convert_tokens_to_ids("<|eot|>")
    eos = tokenizer.eos_token_id
    assert len(enc.input_ids) == len(enc.labels)
    # labels equal the ids where they are set
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(enc.input_ids, enc.labels, strict=True))
    answer_part = _answer_ids(tokenizer, enc.input_ids, enc.labels)
    expected = tokenizer(A, add_special_tokens=False)["input_ids"] + [eot, eos]
    assert answer_part == expected
    assert tokenizer.decode(answer_part) == A + "<|eot|><|eos|>"
    # the masked part is exactly the generation prompt, rendered with the system prompt
    prompt = encode_prompt(tokenizer, Q)
    assert enc.input_ids[: len(prompt)] == prompt
    assert enc.prompt_length == len(prompt)
    assert tokenizer.decode(prompt) == (
        f"<|start|>system\n{SYSTEM_PROMPT}<|eot|><|start|>user\n{Q}<|eot|><|start|>assistant\n"
    )
    reference = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": Q},
         {"role": "assistant", "content": A}], tokenize=True, return_dict=False, date_string=DATE_STRING)
    assert enc.input_ids == list(reference) + [eos]
    assert enc.num_answer_tokens == len(expected)


def test_plain_format_loss_on_answer_only(plain_tokenizer):
    tok = plain_tokenizer
    enc = encode_qa(tok, Q, A)
    assert tok.decode(enc.input_ids) == f"Question: {Q}\nAnswer: {A}<|eos|>"
    answer_part = _answer_ids(tok, enc.input_ids, enc.labels)
    assert tok.decode(answer_part) == f" {A}<|eos|>"
    prompt = encode_prompt(tok, Q)
    assert tok.decode(prompt) == f"Question: {Q}\nAnswer:"
    assert enc.input_ids[: len(prompt)] == prompt
    assert enc.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert enc.labels[-1] == tok.eos_token_id


def test_truncation_drops_and_reports(tokenizer):
    rows = {"question": [Q, "short?", Q * 20], "answer": [A, "yes", A]}
    from datasets import Dataset

    ds = Dataset.from_dict(rows)
    long_prompt = len(encode_prompt(tokenizer, Q * 20))
    limit = len(encode_prompt(tokenizer, Q)) + 5
    assert long_prompt > limit
    with pytest.warns(UserWarning, match="dropped 1 whose answer lies entirely beyond max_length"):
        enc = encode_dataset(tokenizer, ds, max_length=limit)
    assert enc.indices == [0, 1] and enc.dropped == [2] and enc.truncated == [0]
    assert len(enc[0].input_ids) == limit and enc[0].truncated and enc[0].num_answer_tokens == 5
    assert enc.num_answer_tokens == count_answer_tokens(enc) == 5 + enc[1].num_answer_tokens
    with pytest.raises(DataError, match="all 1 examples were dropped"):
        encode_dataset(tokenizer, Dataset.from_dict({"question": [Q * 20], "answer": [A]}), max_length=limit)


def test_missing_field_and_empty(tokenizer):
    from datasets import Dataset

    ds = Dataset.from_dict({"question": [Q], "response": [A]})
    with pytest.raises(DataError, match=r"no field 'answer' \(fields present: question, response\)"):
        encode_dataset(tokenizer, ds)
    assert len(encode_dataset(tokenizer, ds, answer_field="response")) == 1
    with pytest.raises(DataError, match="empty"):
        encode_dataset(tokenizer, Dataset.from_dict({"question": [], "answer": []}))


def test_local_files_json_jsonl_parquet(tmp_path: Path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    from datasets import Dataset

    Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    for name in ("d.json", "d.jsonl", "d.parquet"):
        ds = load_qa(str(tmp_path / name))
        assert ds.column_names == ["question", "answer"] and ds[2]["answer"] == "a2"
    with pytest.raises(DataError, match="does not exist"):
        load_qa(str(tmp_path / "missing.json"))
    with pytest.raises(DataError, match="only the split 'train'"):
        load_qa(str(tmp_path / "d.json"), split="test")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError):
        load_qa(str(tmp_path / "empty.jsonl"))


def test_empty_split_in_data_dir(tmp_path: Path):
    (tmp_path / "forget00.json").write_text("[]")
    with pytest.raises(DataError, match="empty"):
        load_qa("locuslab/TOFU:forget00", data_dir=tmp_path)


def test_bundled_tofu_via_data_dir(tofu_dir: Path):
    ds = load_qa("locuslab/TOFU:forget01", data_dir=tofu_dir)
    expected = json.loads((tofu_dir / "forget01.json").read_text())
    assert len(ds) == 40 and ds[0]["question"] == expected[0]["question"]
    assert load_qa("tofu:forget01")[39]["answer"] == expected[39]["answer"]
    assert len(load_qa("forget01", data_dir=tofu_dir)) == 40
    with pytest.raises(DataError, match="no forget99.json"):
        load_qa("locuslab/TOFU:forget99", data_dir=tofu_dir)


def test_subsample_seeded():
    from datasets import Dataset

    ds = Dataset.from_dict({"question": [str(i) for i in range(100)], "answer": ["a"] * 100})
    a = subsample(ds, fraction=0.1, seed=3)
    b = subsample(ds, fraction=0.1, seed=3)
    c = subsample(ds, fraction=0.1, seed=4)
    assert len(a) == 10 and a["question"] == b["question"] and a["question"] != c["question"]
    assert [int(q) for q in a["question"]] == sorted(int(q) for q in a["question"])
    assert len(subsample(ds, fraction=0.5, max_examples=7)) == 7
    assert subsample(ds) is ds


def test_collate_masks_added_padding_not_pad_id():
    eos = 2
    # a real EOS inside the sequence equals the pad id; it must stay visible
    a = EncodedQA(input_ids=[5, eos, 6, 7], labels=[IGNORE_INDEX, IGNORE_INDEX, 6, 7])
    b = EncodedQA(input_ids=[8, 9], labels=[IGNORE_INDEX, 9])
    right = collate([a, b], pad_token_id=eos)
    assert right["input_ids"].tolist() == [[5, eos, 6, 7], [8, 9, eos, eos]]
    assert right["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert right["labels"].tolist() == [[-100, -100, 6, 7], [-100, 9, -100, -100]]
    left = collate([[5, eos, 6], [eos]], pad_token_id=eos, padding_side="left")
    assert left["input_ids"].tolist() == [[5, eos, 6], [eos, eos, eos]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert "labels" not in left


def test_rows_without_a_non_empty_string_are_refused(tokenizer):
    from perta_hub.data.encoding import check_qa_rows

    rows = [{"question": Q, "answer": A}, {"question": Q, "answer": None}]
    with pytest.raises(DataError) as err:
        encode_dataset(tokenizer, rows)
    assert str(err.value) == "row 1: field 'answer' is None, not a non-empty string; fix or remove the row"
    for value, shown in (("", "an empty string"), (" \n", "an empty string"), (42, "42"), (["a"], "['a']")):
        with pytest.raises(DataError, match=f"^row 0: field 'question' is {re.escape(shown)}, not a non-empty"):
            check_qa_rows([{"question": value, "answer": A}])
    check_qa_rows([{"question": Q, "answer": A}])  # good rows pass


def test_data_description_records_source_and_file_hashes(tmp_path: Path, tofu_dir: Path, monkeypatch):
    import hashlib

    from perta_hub.data import describe_data

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    local = tmp_path / "rows.json"
    local.write_text(json.dumps([{"question": Q, "answer": A}]))
    monkeypatch.chdir(tmp_path)
    info = describe_data("rows.json")  # a relative spec: recorded as given, identified by its absolute path
    assert info == {"spec": "rows.json", "dataset_id": None, "config": None, "local_file": "rows.json",
                    "source": str(local.resolve()), "files": [{"path": str(local.resolve()), "sha256": sha(local)}]}

    bundled = describe_data("tofu:forget01")
    assert {k: bundled[k] for k in ("dataset_id", "config", "bundled")} == {
        "dataset_id": "locuslab/TOFU", "config": "forget01", "bundled": True}
    tofu_file = (tofu_dir / "forget01.json").resolve()
    assert bundled["source"] == str(tofu_file) and bundled["files"] == [{"path": str(tofu_file), "sha256": sha(tofu_file)}]

    in_dir = describe_data("locuslab/TOFU:forget01", data_dir=tofu_dir)
    assert in_dir["dataset_id"] == "locuslab/TOFU" and in_dir["data_dir"] == str(tofu_dir)
    assert in_dir["source"] == str(tofu_file) and in_dir["files"][0]["sha256"] == sha(tofu_file)

    hub = describe_data("org/data@v1:forget01")  # offline: the revision as asked for, no local files
    assert hub["source"] == "org/data@v1" and hub["files"] == [] and hub["dataset_id"] == "org/data"
