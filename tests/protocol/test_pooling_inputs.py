from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from protocol.http import HTTPError
from protocol.pooling.inputs import EMPTY_INPUT_MESSAGE, encode_texts


class WhitespaceTokenizer:
    """One token per word; special tokens 101/102 around them when asked, as BERT's."""

    def __call__(self, texts: list[str], add_special_tokens: bool = True, **_: Any) -> Any:
        ids = [[len(word) for word in text.split()] for text in texts]
        if add_special_tokens:
            ids = [[101, *row, 102] for row in ids]
        return {"input_ids": ids}


ENGINE = SimpleNamespace(tokenizer=WhitespaceTokenizer(), max_model_len=16)


def test_text_that_tokenizes_to_nothing_is_a_400_not_a_crash() -> None:
    # Regression: " " without special tokens reached the model as zero tokens (a 500).
    with pytest.raises(HTTPError) as info:
        encode_texts(ENGINE, ["a b", " "], False, None)
    assert (info.value.status, info.value.message) == (400, EMPTY_INPUT_MESSAGE)


def test_special_tokens_keep_whitespace_text_encodable() -> None:
    assert encode_texts(ENGINE, [" "], True, None) == [[101, 102]]
