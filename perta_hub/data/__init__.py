"""Question/answer data: where a spec points and loading it (:mod:`.loading`), turning rows into token ids
(:mod:`.encoding`), and what gets recorded about it (:mod:`.describe`)."""

from perta_hub.data.describe import describe_data
from perta_hub.data.encoding import (
    IGNORE_INDEX,
    EncodedQA,
    EncodedQAList,
    check_qa_rows,
    collate,
    count_answer_tokens,
    encode_dataset,
    encode_prompt,
    encode_qa,
    has_chat_template,
    load_tokenizer,
)
from perta_hub.data.loading import BUNDLED_TOFU, LOCAL_SUFFIXES, load_qa, locate, subsample

__all__ = [
    "BUNDLED_TOFU",
    "IGNORE_INDEX",
    "LOCAL_SUFFIXES",
    "EncodedQA",
    "EncodedQAList",
    "check_qa_rows",
    "collate",
    "count_answer_tokens",
    "describe_data",
    "encode_dataset",
    "encode_prompt",
    "encode_qa",
    "has_chat_template",
    "load_qa",
    "load_tokenizer",
    "locate",
    "subsample",
]
