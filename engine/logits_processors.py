"""Per-sequence changes to the logits before sampling, in the order vLLM applies them:
`logit_bias`, `allowed_token_ids`, `bad_words`, `min_tokens`, then structured outputs.

Structured outputs are enforced token by token: each constrained sequence has an llguidance
matcher over its grammar (JSON schema, regex, choice or Lark grammar). A step's masks depend
only on the tokens so far, so the runner starts computing them (`prefetch`, in a background
thread; llguidance releases the GIL and spreads the rows over its own thread pool) before the
model's forward pass and collects them after it; the disallowed logits become -inf, and after
sampling each matcher consumes its token. The model never produces output the grammar rejects,
and nothing is retried.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch
import torch

from engine.sequence import Sequence


class GrammarMatchers:
    """The llguidance matchers of the running constrained sequences, by seq id."""

    def __init__(self, tokenizer: Any) -> None:
        self._hf_tokenizer = tokenizer
        self._ll_tokenizer: llguidance.LLTokenizer | None = None  # built on first use (~0.5 s)
        self._executor = llguidance.LLExecutor()
        self._matchers: dict[int, llguidance.LLMatcher] = {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-masks")
        self._pending: tuple[tuple[int, ...], Future[torch.Tensor]] | None = None

    def add(self, seq_id: int, grammar: str) -> None:
        if self._ll_tokenizer is None:
            self._ll_tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer)
        matcher = llguidance.LLMatcher(self._ll_tokenizer, grammar)
        if matcher.is_error():
            raise ValueError(f"invalid grammar: {matcher.get_error()}")
        self._matchers[seq_id] = matcher

    def remove(self, seq_id: int) -> None:
        self._matchers.pop(seq_id, None)

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._matchers

    def prefetch(self, seq_ids: list[int]) -> None:
        """Starts computing the next-token masks of these sequences (those with a grammar)."""
        if not self._matchers:
            return  # the common case: no constrained sequence at all
        constrained = tuple(s for s in seq_ids if s in self._matchers)
        if constrained:
            self._pending = (constrained, self._thread.submit(self._bitmask, constrained))

    def _bitmask(self, seq_ids: tuple[int, ...]) -> torch.Tensor:
        """[len(seq_ids), ceil(vocab / 32)] int32: bit t of row i set when token t is allowed."""
        assert self._ll_tokenizer is not None
        bitmask = llguidance.torch.allocate_token_bitmask(
            len(seq_ids), self._ll_tokenizer.vocab_size
        )
        llguidance.torch.fill_next_token_bitmask_par(
            self._executor, [(self._matchers[s], i) for i, s in enumerate(seq_ids)], bitmask
        )
        return bitmask

    def apply(self, logits: torch.Tensor, rows: list[int], seq_ids: list[int]) -> None:
        """Masks, in place, what each listed row's grammar does not allow next."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == tuple(seq_ids):
            bitmask = pending[1].result()
        else:
            if pending is not None:
                pending[1].result()  # never leave a computation running on the matchers
            bitmask = self._bitmask(tuple(seq_ids))
        index = torch.tensor(rows, device=logits.device)
        constrained = logits.index_select(0, index).cpu()  # [len(rows), vocab]
        llguidance.torch.apply_token_bitmask_inplace(constrained, bitmask)
        logits.index_copy_(0, index, constrained.to(logits.device))

    def advance(self, sampled: dict[int, int]) -> None:
        """Each constrained sequence's matcher consumes its new token (all in one parallel
        call)."""
        pairs = [
            (matcher, token)
            for seq_id, token in sampled.items()
            if (matcher := self._matchers.get(seq_id)) is not None and not matcher.is_stopped()
        ]
        if pairs:
            llguidance.torch.consume_token_par(self._executor, pairs)


def apply_logits_processors(
    logits: torch.Tensor,
    seqs: list[Sequence],
    eos_token_ids: frozenset[int],
    grammars: GrammarMatchers | None,
) -> None:
    """logits: [len(seqs), vocab] float32, changed in place for the rows that ask for it."""
    neg_inf = float("-inf")
    grammar_rows: list[int] = []
    for row, seq in enumerate(seqs):
        params = seq.params
        if not params.has_logits_processors:
            continue
        if params.logit_bias:
            ids = torch.tensor([i for i, _ in params.logit_bias], device=logits.device)
            biases = torch.tensor([b for _, b in params.logit_bias], device=logits.device)
            logits[row].index_add_(0, ids, biases)
        if params.allowed_token_ids is not None:
            ids = torch.tensor(params.allowed_token_ids, device=logits.device)
            kept = logits[row, ids].clone()
            logits[row].fill_(neg_inf)
            logits[row, ids] = kept
        for words in params.bad_words_token_ids:
            # The last token of a bad word is banned once the tokens before it were generated.
            prefix = words[:-1]
            outputs = seq.output_token_ids
            if not prefix or tuple(outputs[len(outputs) - len(prefix) :]) == prefix:
                logits[row, words[-1]] = neg_inf
        if seq.num_output_tokens < params.min_tokens:
            # A stop id outside the vocabulary can never be sampled, so there is nothing to ban
            # (and indexing with it would fail the whole step).
            vocab = logits.shape[-1]
            banned = [t for t in (*params.stop_token_ids, *eos_token_ids) if 0 <= t < vocab]
            if banned:
                logits[row, banned] = neg_inf
        if grammars is not None and seq.seq_id in grammars:
            grammar_rows.append(row)
    if grammars is not None and grammar_rows:
        grammars.apply(logits, grammar_rows, [seqs[row].seq_id for row in grammar_rows])
