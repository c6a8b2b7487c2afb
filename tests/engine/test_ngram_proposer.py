"""Prompt-lookup drafts: the longest matching suffix n-gram, its earliest occurrence, up to k
tokens after it (no torch)."""

from __future__ import annotations

import pytest

from engine.ngram_proposer import NgramProposer


@pytest.mark.parametrize(
    ("tokens", "proposer", "draft"),
    [
        # [2, 3] recurs (the 3-gram [4, 2, 3] does not): what followed it, as far as it goes.
        ([1, 2, 3, 4, 2, 3], NgramProposer(k=4, min_n=2, max_n=3), [4, 2, 3]),
        ([1, 2, 3, 4, 2, 3], NgramProposer(k=2, min_n=2, max_n=3), [4, 2]),
        # The longest n wins over a shorter one that occurs earlier.
        ([7, 9, 5, 8, 9, 5, 6, 8, 9, 5], NgramProposer(k=1, min_n=1, max_n=3), [6]),
        # Of equal matches, the earliest.
        ([5, 1, 5, 2, 5], NgramProposer(k=1, min_n=1, max_n=1), [1]),
        # Nothing recurs, or too little context: no draft.
        ([1, 2, 3, 4], NgramProposer(k=3, min_n=1, max_n=2), []),
        ([1], NgramProposer(k=3, min_n=1, max_n=2), []),
        ([4, 4], NgramProposer(k=3, min_n=2, max_n=2), []),
        # A run of one token proposes more of it.
        ([6, 6, 6, 6], NgramProposer(k=2, min_n=1, max_n=3), [6]),
    ],
)
def test_the_draft_follows_the_longest_earliest_match(tokens, proposer, draft) -> None:
    assert proposer.propose(tokens) == draft


def test_the_draft_stops_at_max_model_len() -> None:
    tokens = [1, 2, 3, 4, 5, 1, 2]
    assert NgramProposer(k=3, max_n=2, max_model_len=9).propose(tokens) == [3, 4]
    assert NgramProposer(k=3, max_n=2, max_model_len=7).propose(tokens) == []


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="prompt_lookup_min"):
        NgramProposer(k=2, min_n=3, max_n=2)
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        NgramProposer(k=0)
