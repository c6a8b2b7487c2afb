"""Each logits processor on its own, on hand-made logits and real Sequences (no model)."""

from __future__ import annotations

import json

import llguidance
import pytest
import torch

from engine.logits_processors import GrammarMatchers, apply_logits_processors, token_rules
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence

VOCAB = 32
NEG_INF = float("-inf")


def _seq(params: SamplingParams, outputs: list[int] = ()) -> Sequence:
    seq = Sequence("r", [1, 2, 3], params)
    for token in outputs:
        seq.append_token(token)
    return seq


def _apply(seqs: list[Sequence], eos=frozenset({0}), grammars=None) -> torch.Tensor:
    logits = torch.zeros(len(seqs), VOCAB)
    rules = {s.seq_id: token_rules(s.params, eos, VOCAB, logits.device) for s in seqs}
    rules = {seq_id: r for seq_id, r in rules.items() if r is not None}
    apply_logits_processors(logits, seqs, rules, grammars)
    return logits


def test_rows_without_processors_are_untouched():
    logits = _apply([_seq(SamplingParams()), _seq(SamplingParams(logit_bias=((5, 2.5),)))])
    assert torch.equal(logits[0], torch.zeros(VOCAB))
    assert logits[1, 5] == 2.5 and logits[1].sum() == 2.5


def test_allowed_token_ids_mask_everything_else():
    logits = _apply([_seq(SamplingParams(allowed_token_ids=(3, 7)))])
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [3, 7]


def test_bad_words_ban_their_last_token_after_their_prefix():
    params = SamplingParams(bad_words_token_ids=((9,), (4, 5)))
    fresh, after_prefix = _apply([_seq(params, [8]), _seq(params, [8, 4])])
    assert fresh[9] == NEG_INF and fresh[5] == 0  # one-token word: always; (4, 5): not yet
    assert after_prefix[9] == NEG_INF and after_prefix[5] == NEG_INF


def test_min_tokens_hold_back_eos_and_stop_tokens():
    params = SamplingParams(min_tokens=2, stop_token_ids=(6,))
    early, done = _apply([_seq(params, [8]), _seq(params, [8, 8])])
    assert early[0] == NEG_INF and early[6] == NEG_INF
    assert torch.isfinite(done).all()


def test_min_tokens_ignore_stop_ids_outside_the_vocabulary():
    params = SamplingParams(min_tokens=2, stop_token_ids=(6, VOCAB, 2**63))
    (row,) = _apply([_seq(params, [8])])
    assert row[0] == NEG_INF and row[6] == NEG_INF and torch.isfinite(row[1:6]).all()


@pytest.fixture(scope="module")
def grammars(smollm2_tokenizer):
    return GrammarMatchers(smollm2_tokenizer)


def test_grammar_masks_follow_the_matcher(grammars, smollm2_tokenizer):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(schema), defaults={"whitespace_flexible": False}
    )
    seq = _seq(SamplingParams(grammar=grammar))
    grammars.add(seq.seq_id, grammars.compile(grammar))
    vocab = len(smollm2_tokenizer)
    text = ""
    for _ in range(8):
        logits = torch.zeros(1, vocab)
        apply_logits_processors(logits, [seq], {}, grammars)
        allowed = torch.isfinite(logits[0]).nonzero().flatten().tolist()
        assert allowed and len(allowed) < vocab
        token = allowed[0] if not text else max(allowed)  # any allowed token keeps it valid
        grammars.advance({seq.seq_id: token})
        seq.append_token(token)
        text = smollm2_tokenizer.decode(seq.output_token_ids)
    assert text.startswith('{"a":')
    grammars.remove(seq.seq_id)
    assert seq.seq_id not in grammars


def test_an_invalid_grammar_is_refused(grammars):
    with pytest.raises(ValueError, match="invalid grammar"):
        grammars.compile(llguidance.LLMatcher.grammar_from_regex("[a-"))


def test_a_grammar_can_wait_for_the_token_it_starts_after(grammars, smollm2_tokenizer):
    """A thinking model's constraint starts after its `</think>`: nothing is masked until that
    token is sampled, and the grammar rules from the next token on."""
    grammar = llguidance.LLMatcher.grammar_from_regex("[0-9]+")
    start, other = smollm2_tokenizer.encode("!")[0], smollm2_tokenizer.encode("a")[0]
    seq = _seq(SamplingParams(grammar=grammar, grammar_after_token_id=start))
    grammars.add(seq.seq_id, grammars.compile(grammar), after_token=start)
    vocab = len(smollm2_tokenizer)
    for token in (other, start):
        assert seq.seq_id not in grammars
        logits = torch.zeros(1, vocab)
        apply_logits_processors(logits, [seq], {}, grammars)
        assert torch.isfinite(logits).all()
        grammars.advance({seq.seq_id: token})
    assert seq.seq_id in grammars
    logits = torch.zeros(1, vocab)
    apply_logits_processors(logits, [seq], {}, grammars)
    allowed = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert allowed and all(smollm2_tokenizer.decode([t]).isdigit() for t in allowed)
    grammars.remove(seq.seq_id)
    assert seq.seq_id not in grammars
