"""Per-sequence changes to the logits before sampling, in the order vLLM applies them:
`logit_bias`, `allowed_token_ids`, `bad_words`, `min_tokens`, then structured outputs.

The token rules are turned into tensors once, when a sequence is added (`token_rules`); a step
then costs a few indexed writes per constrained row, however large the request's maps are.

Structured outputs are enforced token by token: each constrained sequence has an llguidance
matcher over its grammar (JSON schema, regex, choice or Lark grammar). A step's masks depend
only on the tokens so far, so the runner starts computing them (`prefetch`, in a background
thread; llguidance releases the GIL and spreads the rows over its own thread pool) before the
model's forward pass and collects them after it; the disallowed logits become -inf, and after
sampling each matcher consumes its token. The model never produces output the grammar rejects,
and nothing is retried.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs
import llguidance
import llguidance.hf
import llguidance.torch
import torch

from engine.errors import SequenceError
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence


class GrammarMatchers:
    """The llguidance matchers of the running constrained sequences, by seq id."""

    def __init__(self, tokenizer: Any) -> None:
        self._hf_tokenizer = tokenizer
        self._ll_tokenizer: llguidance.LLTokenizer | None = None  # built on first use (~0.5 s)
        self._lock = threading.Lock()
        self._executor = llguidance.LLExecutor()
        self._matchers: dict[int, llguidance.LLMatcher] = {}
        # Matchers that start once their sequence samples the token they wait for.
        self._waiting: dict[int, tuple[int, llguidance.LLMatcher]] = {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-masks")
        self._pending: tuple[tuple[int, ...], Future[torch.Tensor]] | None = None

    def compile(self, grammar: str) -> llguidance.LLMatcher:
        """A matcher for the grammar; ValueError if it does not compile. Thread-safe: its cost
        grows with the grammar, so the async engine calls it from a worker thread."""
        with self._lock:
            if self._ll_tokenizer is None:
                self._ll_tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer)
        matcher = llguidance.LLMatcher(self._ll_tokenizer, grammar)
        if matcher.is_error():
            raise ValueError(f"invalid grammar: {matcher.get_error()}")
        return matcher

    def add(
        self, seq_id: int, matcher: llguidance.LLMatcher, after_token: int | None = None
    ) -> None:
        """The sequence's output follows the matcher from now on, or, given after_token, from
        the token after that one."""
        if after_token is None:
            self._matchers[seq_id] = matcher
        else:
            self._waiting[seq_id] = (after_token, matcher)

    def remove(self, seq_id: int) -> None:
        self._matchers.pop(seq_id, None)
        self._waiting.pop(seq_id, None)

    def __contains__(self, seq_id: int) -> bool:
        """Whether the sequence's next token is constrained."""
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
                # Never leave a computation running on the matchers; a stale one (its step
                # failed) may have raised, which concerns nobody now.
                with contextlib.suppress(Exception):
                    pending[1].result()
            bitmask = self._bitmask(tuple(seq_ids))
        index = torch.tensor(rows, device=logits.device)
        constrained = logits.index_select(0, index).cpu()  # [len(rows), vocab]
        llguidance.torch.apply_token_bitmask_inplace(constrained, bitmask)
        logits.index_copy_(0, index, constrained.to(logits.device))

    def advance(self, sampled: dict[int, int]) -> None:
        """Each constrained sequence's matcher consumes its new token (all in one parallel
        call); a waiting matcher whose token came starts with the next one."""
        for seq_id in [s for s in self._waiting if s in sampled]:
            after_token, matcher = self._waiting[seq_id]
            if sampled.pop(seq_id) == after_token:
                del self._waiting[seq_id]
                self._matchers[seq_id] = matcher
        pairs = [
            (matcher, token)
            for seq_id, token in sampled.items()
            if (matcher := self._matchers.get(seq_id)) is not None and not matcher.is_stopped()
        ]
        if pairs:
            llguidance.torch.consume_token_par(self._executor, pairs)


@attrs.frozen
class TokenRules:
    """One sequence's logit_bias, allowed_token_ids, bad words and min_tokens bans, as the
    tensors a step applies (built once by `token_rules`)."""

    bias_ids: torch.Tensor | None = None  # [k] int64, with bias_values [k] float32
    bias_values: torch.Tensor | None = None
    allowed_ids: torch.Tensor | None = None  # [k] int64: every other logit becomes -inf
    banned_ids: torch.Tensor | None = None  # [k] int64: one-token bad words, always banned
    # Longer bad words: (the tokens before the last, the last), banned once the prefix is out.
    bad_word_tails: tuple[tuple[tuple[int, ...], int], ...] = ()
    min_tokens: int = 0
    stop_ids: torch.Tensor | None = None  # [k] int64: banned until min_tokens are out

    def apply(self, row: torch.Tensor, output_token_ids: list[int]) -> None:
        """row: [vocab] float32, changed in place."""
        neg_inf = float("-inf")
        if self.bias_ids is not None:
            row.index_add_(0, self.bias_ids, self.bias_values)
        if self.allowed_ids is not None:
            kept = row[self.allowed_ids]
            row.fill_(neg_inf)
            row[self.allowed_ids] = kept
        if self.banned_ids is not None:
            row[self.banned_ids] = neg_inf
        for prefix, last in self.bad_word_tails:
            if tuple(output_token_ids[len(output_token_ids) - len(prefix) :]) == prefix:
                row[last] = neg_inf
        if self.stop_ids is not None and len(output_token_ids) < self.min_tokens:
            row[self.stop_ids] = neg_inf


def token_rules(
    params: SamplingParams, eos_token_ids: frozenset[int], vocab_size: int, device: torch.device
) -> TokenRules | None:
    """The sequence's rules as tensors on `device`; None when it has none."""

    def ids(values: Iterable[int]) -> torch.Tensor | None:
        values = list(values)
        return torch.tensor(values, dtype=torch.int64, device=device) if values else None

    bias = params.logit_bias
    if not (bias or params.allowed_token_ids is not None or params.bad_words_token_ids):
        if not params.min_tokens:
            return None
    # A stop id outside the vocabulary can never be sampled, so there is nothing to ban (and
    # indexing with it would fail the step).
    stops = [t for t in (*params.stop_token_ids, *eos_token_ids) if 0 <= t < vocab_size]
    return TokenRules(
        bias_ids=ids(i for i, _ in bias),
        bias_values=torch.tensor([b for _, b in bias], device=device) if bias else None,
        allowed_ids=None if params.allowed_token_ids is None else ids(params.allowed_token_ids),
        banned_ids=ids(w[0] for w in params.bad_words_token_ids if len(w) == 1),
        bad_word_tails=tuple((w[:-1], w[-1]) for w in params.bad_words_token_ids if len(w) > 1),
        min_tokens=params.min_tokens,
        stop_ids=ids(stops) if params.min_tokens else None,
    )


def apply_logits_processors(
    logits: torch.Tensor,
    seqs: list[Sequence],
    rules: Mapping[int, TokenRules],
    grammars: GrammarMatchers | None,
) -> None:
    """logits: [len(seqs), vocab] float32, changed in place for the rows that ask for it;
    `rules` by seq id (only sequences that have some)."""
    grammar_rows: list[int] = []
    for row, seq in enumerate(seqs):
        seq_rules = rules.get(seq.seq_id)
        if seq_rules is not None:
            try:
                seq_rules.apply(logits[row], seq.output_token_ids)
            except Exception as exc:
                raise SequenceError(seq.seq_id, exc) from exc
        if grammars is not None and seq.seq_id in grammars:
            grammar_rows.append(row)
    if grammars is not None and grammar_rows:
        grammars.apply(logits, grammar_rows, [seqs[row].seq_id for row in grammar_rows])
