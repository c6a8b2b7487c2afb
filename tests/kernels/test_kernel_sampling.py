"""Penalties, temperature / top-k / top-p / min-p filtering and sampling."""

from __future__ import annotations

import math

import pytest
import torch

from compiled_kernels.sampling import SamplingTensors, apply_penalties, filter_logits, sample
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence
from engine.step_inputs import sampling_tensors


def make_tensors(
    n: int,
    *,
    temperature: float | list[float] = 1.0,
    top_p: float | list[float] = 1.0,
    top_k: int | list[int] = 0,
    min_p: float | list[float] = 0.0,
    **penalties: torch.Tensor,
) -> SamplingTensors:
    def col(value, dtype):
        values = value if isinstance(value, list) else [value] * n
        assert len(values) == n
        return torch.tensor(values, dtype=dtype)

    return SamplingTensors(
        temperature=col(temperature, torch.float32),
        top_p=col(top_p, torch.float32),
        top_k=col(top_k, torch.int64),
        min_p=col(min_p, torch.float32),
        **penalties,
    )


def log_probs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log().float()


def kept(filtered: torch.Tensor) -> list[list[int]]:
    """Token ids that survived filtering, per row."""
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in filtered]


# --- greedy -----------------------------------------------------------------------------------


def test_temperature_zero_rows_return_argmax_while_other_rows_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=gen)
    temps = [0.0, 1.5, 0.0, 1.0, 0.0, 2.0]
    # Greedy rows also carry filters: they must not matter.
    t = make_tensors(6, temperature=temps, top_p=0.3, top_k=5, min_p=0.2)
    t_open = make_tensors(6, temperature=temps)
    argmax = logits.argmax(-1)
    sampled_rows: set[int] = set()
    for seed in range(20):
        torch.manual_seed(seed)
        for tensors in (t, t_open):
            tokens = sample(logits, tensors, [None] * 6)
            assert tokens.dtype == torch.int64 and tokens.shape == (6,)
            for row in (0, 2, 4):
                assert tokens[row] == argmax[row]
            sampled_rows |= {r for r in (1, 3, 5) if tokens[r] != argmax[r]}
    assert sampled_rows  # the non-greedy rows really did sample


def test_all_greedy_batch_returns_argmax() -> None:
    logits = torch.randn(4, 30)
    tokens = sample(logits, make_tensors(4, temperature=0.0), [None] * 4)
    assert torch.equal(tokens, logits.argmax(-1))


def test_top_k_1_returns_argmax_at_temperature_1() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 40, generator=gen) * 0.1  # nearly flat: sampling would wander
    t = make_tensors(5, temperature=1.0, top_k=1)
    for seed in range(20):
        torch.manual_seed(seed)
        assert torch.equal(sample(logits, t, [None] * 5), logits.argmax(-1))


def test_greedy_uses_penalised_logits() -> None:
    logits = torch.tensor([[3.0, 2.5, -1.0]])
    seen = torch.tensor([[True, False, False]])
    t = make_tensors(
        1,
        temperature=0.0,
        repetition_penalty=torch.tensor([2.0]),
        frequency_penalty=torch.tensor([0.0]),
        presence_penalty=torch.tensor([0.0]),
        output_counts=torch.zeros(1, 3),
        seen_mask=seen,
    )
    assert sample(logits, t, [None]).tolist() == [1]  # 3.0 / 2 = 1.5 < 2.5


# --- filtering --------------------------------------------------------------------------------


def test_top_p_keeps_smallest_set_reaching_mass() -> None:
    # Probabilities out of vocabulary order: [0.15, 0.5, 0.05, 0.3].
    logits = log_probs([0.15, 0.5, 0.05, 0.3])
    assert kept(filter_logits(logits, make_tensors(1, top_p=0.7))) == [[1, 3]]  # 0.5 + 0.3
    assert kept(filter_logits(logits, make_tensors(1, top_p=0.85))) == [[0, 1, 3]]
    assert kept(filter_logits(logits, make_tensors(1, top_p=0.97))) == [[0, 1, 2, 3]]
    assert kept(filter_logits(logits, make_tensors(1, top_p=1.0))) == [[0, 1, 2, 3]]


def test_top_p_keeps_exactly_two_of_sorted_probs() -> None:
    filtered = filter_logits(log_probs([0.5, 0.3, 0.15, 0.05]), make_tensors(1, top_p=0.7))
    assert kept(filtered) == [[0, 1]]
    renormalised = filtered.softmax(-1)[0]
    torch.testing.assert_close(renormalised[:2], torch.tensor([0.625, 0.375]))


def test_top_p_stops_once_mass_is_reached_exactly() -> None:
    # Equal logits give exactly 0.25 each, so the cumulative mass hits 0.5 exactly at two tokens.
    logits = torch.zeros(1, 4)
    assert len(kept(filter_logits(logits, make_tensors(1, top_p=0.5)))[0]) == 2
    assert len(kept(filter_logits(logits, make_tensors(1, top_p=0.5001)))[0]) == 3


@pytest.mark.parametrize("top_p", [0.0, 1e-6, 0.3, 0.49])
def test_top_p_never_removes_the_top_token(top_p: float) -> None:
    logits = log_probs([0.15, 0.5, 0.05, 0.3])
    assert kept(filter_logits(logits, make_tensors(1, top_p=top_p))) == [[1]]


def test_top_k_keeps_k_highest() -> None:
    logits = torch.tensor([[0.1, 3.0, -2.0, 2.0, 1.0]])
    assert kept(filter_logits(logits, make_tensors(1, top_k=2))) == [[1, 3]]
    assert kept(filter_logits(logits, make_tensors(1, top_k=0))) == [[0, 1, 2, 3, 4]]
    assert kept(filter_logits(logits, make_tensors(1, top_k=10))) == [[0, 1, 2, 3, 4]]


def test_min_p_removes_tokens_below_fraction_of_max_prob() -> None:
    logits = log_probs([0.2, 0.4, 0.1, 0.3])
    assert kept(filter_logits(logits, make_tensors(1, min_p=0.6))) == [[1, 3]]  # < 0.24 out
    assert kept(filter_logits(logits, make_tensors(1, min_p=0.3))) == [[0, 1, 3]]  # < 0.12 out
    assert kept(filter_logits(logits, make_tensors(1, min_p=0.0))) == [[0, 1, 2, 3]]
    assert kept(filter_logits(logits, make_tensors(1, min_p=1.0))) == [[1]]


def test_min_p_keeps_tokens_exactly_at_the_threshold() -> None:
    # Only tokens strictly below min_p * max go: tied top tokens all survive min_p = 1.
    logits = torch.tensor([[0.0, 0.0, -1.0, 0.0]])
    assert kept(filter_logits(logits, make_tensors(1, min_p=1.0))) == [[0, 1, 3]]


def test_filter_applies_temperature_and_keeps_surviving_logits_scaled() -> None:
    logits = torch.tensor([[1.0, 4.0, -2.0, 3.0]])
    out = filter_logits(logits, make_tensors(1, temperature=0.5, top_k=2))
    assert out[0, 1] == 8.0 and out[0, 3] == 6.0
    assert out[0, 0] == out[0, 2] == float("-inf")
    # Temperature sharpens before top-p: at T=0.5 the top token has 0.25 / 0.365 = 0.68 >= 0.6.
    probs = log_probs([0.5, 0.3, 0.15, 0.05])
    assert kept(filter_logits(probs, make_tensors(1, temperature=1.0, top_p=0.6))) == [[0, 1]]
    assert kept(filter_logits(probs, make_tensors(1, temperature=0.5, top_p=0.6))) == [[0]]


def test_without_filters_every_token_keeps_its_scaled_logit() -> None:
    """top_p 1, top_k 0 and min_p 0 (the defaults) remove nothing, not even tail tokens whose
    mass before them rounds to 1 in float32, and need no sort."""
    logits = torch.tensor([[30.0] + [-30.0] * 999, [float(i % 7) for i in range(1000)]])
    t = make_tensors(2, temperature=[0.5, 2.0])
    assert torch.equal(filter_logits(logits, t), logits / torch.tensor([[0.5], [2.0]]))


def test_filter_settings_are_per_row() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 20, generator=gen)
    settings = [
        dict(temperature=1.0, top_p=0.5, top_k=0, min_p=0.0),
        dict(temperature=0.7, top_p=1.0, top_k=3, min_p=0.0),
        dict(temperature=1.3, top_p=1.0, top_k=0, min_p=0.2),
        dict(temperature=1.0, top_p=1.0, top_k=0, min_p=0.0),
    ]
    batched = filter_logits(
        logits, make_tensors(4, **{k: [s[k] for s in settings] for k in settings[0]})
    )
    for row, s in enumerate(settings):
        alone = filter_logits(logits[row : row + 1], make_tensors(1, **s))
        assert torch.equal(batched[row : row + 1], alone)
    assert kept(batched)[3] == list(range(20))


# --- seeded and statistical sampling ----------------------------------------------------------


def _draw(logits: torch.Tensor, t: SamplingTensors, gens: list, steps: int, row: int) -> list[int]:
    return [sample(logits, t, gens)[row].item() for _ in range(steps)]


def test_seeded_row_is_independent_of_batch_composition() -> None:
    vocab, steps, row = 64, 8, 3
    logits = torch.randn(8, vocab, generator=torch.Generator().manual_seed(3)) * 0.5
    settings = dict(
        temperature=[1.0, 0.0, 0.8, 1.0, 1.2, 1.0, 0.0, 1.0],
        top_p=[1.0, 1.0, 0.9, 0.95, 1.0, 1.0, 1.0, 0.5],
        top_k=[0, 0, 10, 40, 0, 5, 0, 0],
        min_p=[0.0, 0.0, 0.0, 0.01, 0.1, 0.0, 0.0, 0.0],
    )
    seeded = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731

    torch.manual_seed(100)
    t_alone = make_tensors(1, **{k: [v[row]] for k, v in settings.items()})
    alone = _draw(logits[row : row + 1], t_alone, [seeded(1234)], steps, 0)

    torch.manual_seed(200)  # different global RNG state for the unseeded rows
    t_batch = make_tensors(8, **settings)
    gens = [None, seeded(5), None, seeded(1234), seeded(1234 + 1), None, None, seeded(9)]
    in_batch = _draw(logits, t_batch, gens, steps, row)

    assert alone == in_batch
    assert len(set(alone)) > 1  # a real random sequence, not a constant


def test_same_seed_same_tokens_different_seed_different_tokens() -> None:
    logits = torch.zeros(1, 1000)  # uniform
    t = make_tensors(1)
    a = _draw(logits, t, [torch.Generator().manual_seed(7)], 6, 0)
    b = _draw(logits, t, [torch.Generator().manual_seed(7)], 6, 0)
    c = _draw(logits, t, [torch.Generator().manual_seed(8)], 6, 0)
    assert a == b
    assert a != c


N_DRAWS = 4000


def _frequencies(logits_row: list[float], **settings) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    logits = torch.tensor([logits_row]).expand(N_DRAWS, -1).contiguous()
    tokens = sample(logits, make_tensors(N_DRAWS, **settings), [gen] * N_DRAWS)
    return torch.bincount(tokens, minlength=len(logits_row)).double() / N_DRAWS


def test_sampling_frequencies_match_probabilities() -> None:
    probs = [0.1, 0.2, 0.3, 0.4]
    freqs = _frequencies([math.log(p) for p in probs])
    torch.testing.assert_close(freqs, torch.tensor(probs, dtype=torch.float64), atol=0.03, rtol=0)


def test_sampling_frequencies_follow_temperature_and_top_p() -> None:
    logits = [math.log(p) for p in (0.5, 0.3, 0.15, 0.05)]
    # top_p 0.7 keeps {0, 1}, renormalised.
    freqs = _frequencies(logits, top_p=0.7)
    expected = torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(freqs, expected, atol=0.03, rtol=0)
    # temperature 0.5 squares the probabilities.
    squared = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64) ** 2
    freqs = _frequencies(logits, temperature=0.5)
    torch.testing.assert_close(freqs, squared / squared.sum(), atol=0.03, rtol=0)


def test_unseeded_sampling_frequencies_match_probabilities() -> None:
    probs = [0.4, 0.1, 0.25, 0.25]
    torch.manual_seed(0)
    logits = torch.tensor([[math.log(p) for p in probs]]).expand(N_DRAWS, -1).contiguous()
    tokens = sample(logits, make_tensors(N_DRAWS), [None] * N_DRAWS)
    freqs = torch.bincount(tokens, minlength=4).double() / N_DRAWS
    torch.testing.assert_close(freqs, torch.tensor(probs, dtype=torch.float64), atol=0.03, rtol=0)


# --- penalties --------------------------------------------------------------------------------


def _penalties(rep: list[float], freq: list[float], pres: list[float], counts, seen) -> dict:
    return dict(
        repetition_penalty=torch.tensor(rep),
        frequency_penalty=torch.tensor(freq),
        presence_penalty=torch.tensor(pres),
        output_counts=torch.tensor(counts, dtype=torch.float32),
        seen_mask=torch.tensor(seen),
    )


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0, 0.0], [2.0, -1.0, 0.5, -3.0, 1.0, 0.0]])
    seen = [[True, True, False, False, True, True], [True, True, True, True, True, True]]
    t = make_tensors(2, **_penalties([2.0, 1.0], [0.0, 0.0], [0.0, 0.0], [[0] * 6] * 2, seen))

    out = apply_penalties(logits, t)

    assert out[0].tolist() == [1.0, -2.0, 0.5, -3.0, 0.5, 0.0]  # unseen 2 and 3 untouched
    assert out[1].tolist() == logits[1].tolist()  # penalty 1.0 is a no-op


def test_frequency_and_presence_penalties_subtract_count_terms() -> None:
    logits = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0], [1.0, 1.0, 1.0, 1.0, -1.0]])
    counts = [[0, 1, 3, 0, 2], [0, 1, 3, 0, 2]]
    # Token 3 is in the prompt only: seen, but no output count -> no frequency/presence penalty.
    seen = [[False, True, True, True, True]] * 2
    t = make_tensors(2, **_penalties([1.0, 1.0], [0.5, 0.0], [0.25, 0.0], counts, seen))

    out = apply_penalties(logits, t)

    expected = [1.0, 1.0 - 0.5 - 0.25, 1.0 - 1.5 - 0.25, 1.0, -1.0 - 1.0 - 0.25]
    torch.testing.assert_close(out[0], torch.tensor(expected))
    assert out[1].tolist() == logits[1].tolist()


def test_penalties_are_skipped_when_absent() -> None:
    logits = torch.randn(3, 10)
    assert torch.equal(apply_penalties(logits, make_tensors(3)), logits)


def test_sampling_tensors_count_outputs_and_mark_prompt_and_outputs_seen() -> None:
    """The tensors the engine feeds these kernels: counts from outputs, seen from all tokens."""
    a = Sequence("a", [1, 2], SamplingParams(frequency_penalty=0.5, presence_penalty=0.1, top_k=-1))
    for tok in (5, 5, 2):
        a.append_token(tok)
    b = Sequence("b", [3], SamplingParams(temperature=0.0, top_k=4))

    t = sampling_tensors([a, b], vocab_size=8, device=torch.device("cpu"))

    assert t.top_k.tolist() == [0, 4]
    assert t.temperature.tolist() == [1.0, 0.0]
    assert t.output_counts[0].tolist() == [0, 0, 1, 0, 0, 2, 0, 0]
    assert t.output_counts[1].tolist() == [0] * 8
    assert t.seen_mask[0].nonzero().flatten().tolist() == [1, 2, 5]
    assert t.seen_mask[1].nonzero().flatten().tolist() == [3]
    out = apply_penalties(torch.zeros(2, 8), t)
    torch.testing.assert_close(out[0], torch.tensor([0, 0, -0.6, 0, 0, -1.1, 0, 0]))
    assert out[1].tolist() == [0] * 8


def test_the_greedy_argmax_is_torch_argmax_with_ties_nan_and_infinities() -> None:
    """The C argmax (compiled_kernels.sampling.argmax) gives torch.argmax's index: the first of
    equal maxima, the first NaN of a row that holds one, 0 for a row of -inf."""
    from compiled_kernels import native
    from compiled_kernels.sampling import argmax

    if native.load() is None:
        pytest.skip("no C compiler")
    torch.manual_seed(0)
    for rows, vocab in [(1, 49152), (3, 7), (32, 1000)]:
        x = torch.randn(rows, vocab)
        assert torch.equal(argmax(x), x.argmax(dim=-1))
    x = torch.zeros(4, 300)
    x[0, 5] = x[0, 9] = x[0, 299] = 2.0  # ties
    x[1, 3], x[1, 7], x[1, 8] = float("inf"), float("nan"), float("nan")
    x[2] = float("-inf")
    x[3, 299] = float("inf")
    assert argmax(x).tolist() == x.argmax(dim=-1).tolist() == [5, 7, 0, 299]
