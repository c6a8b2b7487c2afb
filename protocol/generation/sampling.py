"""Request fields → engine SamplingParams, with vLLM's validation rules and messages.

Everything here runs before a stream starts, so every mistake is a real HTTP 400 with `param`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import attrs

from configs.settings import Settings
from engine.sampling_params import SamplingParams
from protocol.bounds import check_bounds
from protocol.generation.request_schemas import GenerationRequest
from protocol.http import HTTPError
from protocol.served_model import ServedModel

logger = logging.getLogger(__name__)

_INT32_MAX = 2**31 - 1
_GREEDY_EPS = 1e-5  # below this temperature vLLM samples greedily
# vLLM raises tiny positive temperatures to this to avoid inf/nan when dividing logits.
_MIN_TEMPERATURE = 1e-2


def _invalid(message: str, param: str) -> HTTPError:
    return HTTPError(400, message, "BadRequestError", param)


def _finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise _invalid(f"{name} must be a finite number, got {value}.", name)


def _or_default(value: Any, name: str, defaults: Mapping[str, Any], neutral: Any) -> Any:
    """The request's value; where it left the field unset, the model's default
    (generation_config.json), else vLLM's neutral one."""
    if value is not None:
        return value
    return defaults.get(name, neutral)


def sampling_params(
    req: GenerationRequest, max_tokens: int, defaults: Mapping[str, Any] | None = None
) -> SamplingParams:
    """Validates the sampling fields; `max_tokens` is resolved by the caller per prompt.
    `defaults` fill temperature, top_p, top_k, min_p and repetition_penalty where the request
    left them unset (the served model's `generation_defaults`)."""
    defaults = defaults or {}
    n = req.num_choices
    check_bounds(GenerationRequest, "n", n)

    temperature = _or_default(req.temperature, "temperature", defaults, 1.0)
    _finite(temperature, "temperature")
    check_bounds(GenerationRequest, "temperature", temperature)
    top_p = _or_default(req.top_p, "top_p", defaults, 1.0)
    check_bounds(GenerationRequest, "top_p", top_p)
    top_k = _or_default(req.top_k, "top_k", defaults, 0)
    check_bounds(GenerationRequest, "top_k", top_k)
    # -1 is the older spelling of "off"; so is any k beyond int32 (larger than any vocabulary),
    # which the sampling kernels could not even hold.
    top_k = 0 if top_k == -1 or top_k > _INT32_MAX else top_k
    min_p = _or_default(req.min_p, "min_p", defaults, 0.0)
    check_bounds(GenerationRequest, "min_p", min_p)

    presence_penalty = 0.0 if req.presence_penalty is None else req.presence_penalty
    check_bounds(GenerationRequest, "presence_penalty", presence_penalty)
    frequency_penalty = 0.0 if req.frequency_penalty is None else req.frequency_penalty
    check_bounds(GenerationRequest, "frequency_penalty", frequency_penalty)
    repetition_penalty = _or_default(req.repetition_penalty, "repetition_penalty", defaults, 1.0)
    _finite(repetition_penalty, "repetition_penalty")
    check_bounds(GenerationRequest, "repetition_penalty", repetition_penalty)

    seed = req.seed
    check_bounds(GenerationRequest, "seed", seed)
    if seed == -1:
        seed = None  # vLLM: -1 means unseeded

    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if any(not s for s in stop):
        raise _invalid("stop cannot contain an empty string.", "stop")
    # Order-preserving de-duplication, as vLLM does.
    stop_token_ids = tuple(dict.fromkeys(req.stop_token_ids or ()))

    if max_tokens < 1:
        raise _invalid(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")

    if temperature < _GREEDY_EPS:
        if n > 1:
            raise _invalid(f"n must be 1 when using greedy sampling, got {n}.", "n")
        temperature, top_p, top_k, min_p = 0.0, 1.0, 0, 0.0
    elif temperature < _MIN_TEMPERATURE:
        logger.debug("raising temperature %s to %s", temperature, _MIN_TEMPERATURE)
        temperature = _MIN_TEMPERATURE

    return SamplingParams(
        n=n,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        seed=seed,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        repetition_penalty=repetition_penalty,
        stop=stop,
        stop_token_ids=stop_token_ids,
        ignore_eos=req.ignore_eos,
        skip_special_tokens=req.skip_special_tokens,
    )


def choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    """One SamplingParams per choice: with a seed, choice i uses seed+i so that the n choices
    differ from each other yet the whole response is reproducible."""
    if params.seed is None:
        return [params] * n
    return [attrs.evolve(params, seed=params.seed + i) for i in range(n)]


def check_stream_options(req: GenerationRequest) -> None:
    if req.stream_options is not None and not req.stream:
        raise _invalid("Stream options can only be defined when stream=True.", "stream_options")


def usage_flags(req: GenerationRequest) -> tuple[bool, bool]:
    """(include_usage, continuous_usage_stats); running usage only comes with include_usage."""
    options = req.stream_options
    if options is None:
        return False, False
    include = bool(options.include_usage)
    return include, include and bool(options.continuous_usage_stats)


def check_max_tokens_limit(requested: int | None, param: str, max_model_len: int) -> None:
    if requested is not None and requested > max_model_len:
        raise _invalid(
            f"{param}={requested} cannot be greater than max_model_len={max_model_len}. "
            "Please request fewer output tokens.",
            param,
        )


def resolve_max_tokens(
    requested: int | None, prompt_len: int, max_model_len: int, default: int | None = None
) -> int:
    """The output budget of one prompt: the request's, or when it set none the model's default
    (generation_config.json's max_new_tokens) or whatever fits, whichever is smaller. The default
    is no ceiling: a request may ask for more, up to the context."""
    if requested is not None:
        needed = requested
    else:
        # vLLM counts an unset budget as 0 for the check, but one token must always fit.
        needed = 0 if prompt_len > max_model_len else 1
    if prompt_len + needed > max_model_len:
        raise _invalid(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {needed} output tokens and your prompt contains {prompt_len} input "
            f"tokens, for a total of {prompt_len + needed} tokens. Please reduce the length of "
            "the input prompt or the number of requested output tokens.",
            "input_tokens",
        )
    if requested is not None:
        return requested
    fits = max_model_len - prompt_len
    return fits if default is None else max(1, min(default, fits))


def check_logprobs(value: int | None, max_logprobs: int, param: str, kind: str = "sample") -> None:
    if value is None:
        return
    if value < 0:
        raise _invalid(f"{param} must be non-negative, got {value}.", param)
    if value > max_logprobs:
        raise _invalid(
            f"Requested {kind} logprobs of {value}, which is greater than max allowed: "
            f"{max_logprobs}",
            param,
        )


def token_params(
    req: GenerationRequest,
    params: SamplingParams,
    served: ServedModel,
    *,
    logprobs: int | None,
    max_logprobs: int,
    grammar: str | None,
) -> SamplingParams:
    """`params` plus the fields that need the model: logprobs, token biases and masks (checked
    against its vocabulary), bad words (tokenized), min_tokens, and the structured-output
    grammar."""
    vocab = served.vocab_size
    check_logprobs(logprobs, max_logprobs, "logprobs")
    check_logprobs(req.prompt_logprobs, max_logprobs, "prompt_logprobs", "prompt")

    bias: list[tuple[int, float]] = []
    for key, value in (req.logit_bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise _invalid(
                f"logit_bias keys must be token ids, got {key!r}.", "logit_bias"
            ) from None
        if not 0 <= token < vocab:
            raise _invalid(
                f"token_id(s) [{token}] in logit_bias contain out-of-vocab token ids. "
                f"Vocabulary size: {vocab}",
                "logit_bias",
            )
        _finite(value, "logit_bias")
        bias.append((token, max(-100.0, min(100.0, value))))  # OpenAI's range

    allowed = None
    if req.allowed_token_ids is not None:
        if not req.allowed_token_ids:
            raise _invalid("allowed_token_ids is not allowed to be empty.", "allowed_token_ids")
        if any(not 0 <= t < vocab for t in req.allowed_token_ids):
            raise _invalid(
                f"allowed_token_ids contains out-of-vocab token id (vocabulary size: {vocab}).",
                "allowed_token_ids",
            )
        allowed = tuple(req.allowed_token_ids)

    bad_words: list[tuple[int, ...]] = []
    for word in req.bad_words or ():
        # A word has two spellings in most vocabularies: alone, and after a space.
        for variant in (word, " " + word.lstrip()):
            ids = tuple(served.tokenizer.encode(variant, add_special_tokens=False))
            if ids and ids not in bad_words:
                bad_words.append(ids)

    check_bounds(GenerationRequest, "min_tokens", req.min_tokens)
    if req.min_tokens > params.max_tokens:
        raise _invalid(
            f"min_tokens must be less than or equal to max_tokens={params.max_tokens}, got "
            f"{req.min_tokens}.",
            "min_tokens",
        )
    return attrs.evolve(
        params,
        logprobs=logprobs,
        prompt_logprobs=req.prompt_logprobs,
        logit_bias=tuple(bias),
        allowed_token_ids=allowed,
        bad_words_token_ids=tuple(bad_words),
        min_tokens=req.min_tokens,
        include_stop_str_in_output=req.include_stop_str_in_output,
        spaces_between_special_tokens=req.spaces_between_special_tokens,
        grammar=grammar,
    )


def truncate_prompt(
    token_ids: list[int], truncate_prompt_tokens: int | None, max_model_len: int
) -> list[int]:
    """vLLM's truncate_prompt_tokens for generation: keep the last k prompt tokens (-1: as many
    as the model takes)."""
    if truncate_prompt_tokens is None:
        return token_ids
    if truncate_prompt_tokens < -1 or truncate_prompt_tokens == 0:
        raise _invalid(
            "truncate_prompt_tokens must be -1 or a positive number.", "truncate_prompt_tokens"
        )
    if truncate_prompt_tokens > max_model_len:
        raise _invalid(
            f"truncate_prompt_tokens={truncate_prompt_tokens} cannot be greater than "
            f"max_model_len={max_model_len}. Please request a smaller truncation size.",
            "truncate_prompt_tokens",
        )
    keep = max_model_len if truncate_prompt_tokens == -1 else truncate_prompt_tokens
    return token_ids[-keep:]


def check_generation_request(
    req: GenerationRequest,
    served: ServedModel,
    *,
    num_prompts: int,
    max_tokens: int | None,
    max_tokens_param: str,
    logprobs: int | None,
    settings: Settings,
) -> None:
    """What a chat or completion request can be refused for before its prompt is read."""
    max_sequences = settings.sequences_per_request
    check_bounds(GenerationRequest, "n", req.n)
    if num_prompts * req.num_choices > max_sequences:
        # Before anything per sequence exists: n = 8192 on 2,000 prompts must cost nothing.
        raise _invalid(
            f"This request asks for {num_prompts * req.num_choices} sequences ({num_prompts} "
            f"prompt(s) x n={req.num_choices}); this server starts at most {max_sequences} per "
            "request (max_sequences_per_request).",
            "n",
        )
    check_logprobs(logprobs, settings.max_logprobs, "logprobs")
    check_stream_options(req)
    check_max_tokens_limit(max_tokens, max_tokens_param, served.max_model_len)
    check_list_sizes(req, served.vocab_size, settings)


def check_list_sizes(req: GenerationRequest, vocab_size: int, settings: Settings) -> None:
    """Stop strings, banned words and token maps are checked on every step: their size is
    capped so that one request cannot slow everyone's steps."""
    stop = [req.stop] if isinstance(req.stop, str) else req.stop or []
    for param, items in (
        ("stop", stop),
        ("stop_token_ids", req.stop_token_ids or []),
        ("bad_words", req.bad_words or []),
    ):
        if len(items) > settings.max_stop_strings:
            raise _invalid(
                f"{param} has {len(items)} entries; this server takes at most "
                f"{settings.max_stop_strings} (max_stop_strings).",
                param,
            )
    for param, strings in (("stop", stop), ("bad_words", req.bad_words or [])):
        longest = max(map(len, strings), default=0)
        if longest > settings.max_stop_string_chars:
            raise _invalid(
                f"{param} has a string of {longest} characters; this server takes at most "
                f"{settings.max_stop_string_chars} (max_stop_string_chars).",
                param,
            )
    for param, tokens in (
        ("logit_bias", req.logit_bias),
        ("allowed_token_ids", req.allowed_token_ids),
    ):
        if tokens is not None and len(tokens) > vocab_size:
            raise _invalid(
                f"{param} has {len(tokens)} entries, more than the vocabulary's {vocab_size} "
                "tokens.",
                param,
            )


def request_params(
    req: GenerationRequest,
    served: ServedModel,
    num_prompt_tokens: int,
    *,
    max_tokens: int | None,
    logprobs: int | None,
    max_logprobs: int,
    grammar: str | None,
) -> SamplingParams:
    """A chat or completion request's SamplingParams for one prompt: the request's fields, the
    model's generation_config.json defaults where it left them unset, the output budget that
    fits the context, and the fields checked against the model's vocabulary."""
    defaults = served.generation_defaults
    budget = resolve_max_tokens(
        max_tokens, num_prompt_tokens, served.max_model_len, defaults.get("max_tokens")
    )
    return token_params(
        req,
        sampling_params(req, budget, defaults),
        served,
        logprobs=logprobs,
        max_logprobs=max_logprobs,
        grammar=grammar,
    )
