"""How one sequence is sampled and when it stops. Plain Python: the scheduler reads it."""

from __future__ import annotations

import attrs


@attrs.frozen
class SamplingParams:
    # Samples of the same prompt in the request (its sequences are consecutive); the engine
    # only counts it, in the request_params_n metric.
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 (or -1) = off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    min_tokens: int = 0  # EOS and stop tokens are masked until this many tokens are out
    logprobs: int | None = None  # most likely tokens to report per output token (0: only it)
    # Tokens whose logprobs are reported with each output token's too, whatever their rank
    # (needs `logprobs`).
    logprob_token_ids: tuple[int, ...] = ()
    prompt_logprobs: int | None = None  # the same for every prompt token
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    allowed_token_ids: tuple[int, ...] | None = None  # all others are masked
    bad_words_token_ids: tuple[tuple[int, ...], ...] = ()  # sequences never generated
    grammar: str | None = None  # an llguidance grammar the output must follow
    # The grammar rules only the tokens after this one (a thinking model's `</think>`): before
    # it, and if it never comes, the output is free.
    grammar_after_token_id: int | None = None

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_logits_processors(self) -> bool:
        return bool(
            self.logit_bias
            or self.allowed_token_ids is not None
            or self.bad_words_token_ids
            or self.min_tokens
            or self.grammar
        )

    @property
    def has_penalties(self) -> bool:
        return (
            self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
            or self.repetition_penalty != 1.0
        )
