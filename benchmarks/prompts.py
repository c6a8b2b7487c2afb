"""Deterministic benchmark prompts shared by load.py and hf_generate.py.

Every server (and the transformers baseline) must see exactly the same input, so
the prompts are cut from a fixed paragraph with no randomness at all.
"""

from __future__ import annotations

# Plain, original English prose, so common BPE vocabularies tokenize it at close
# to the usual words-per-token ratio used below.
_PARAGRAPH = (
    "The old lighthouse keeper climbed the spiral stairs every evening just before "
    "sunset, carrying a small lamp and a notebook full of careful observations. He "
    "wrote down the colour of the sky, the direction of the wind, the number of "
    "ships that passed the rocky point, and the names of the birds that rested on "
    "the railing. Over forty years the notebooks filled an entire wall of his tiny "
    "kitchen, and visitors from the village often asked to read them. Children "
    "liked the pages about storms, when waves broke over the lower windows and the "
    "whole tower seemed to hum like a struck bell. Fishermen studied the tables of "
    "tides and winds, looking for patterns that might tell them when the mackerel "
    "would return to the bay. A young teacher once spent a whole summer copying the "
    "entries into a computer, hoping to find a slow change in the weather hidden "
    "among the numbers. When the lighthouse was finally automated, the keeper "
    "moved into a cottage near the harbour, but he still walked to the cliff each "
    "evening, opened a fresh notebook, and wrote down exactly what he saw, because "
    "he believed that paying close attention was a kind of quiet gratitude."
)
_WORDS = _PARAGRAPH.split()

# English averages about 0.75 words per token, so N tokens is about 0.75*N words.
WORDS_PER_TOKEN = 0.75


def build_prompts(n: int, prompt_tokens: int, start: int = 0) -> list[str]:
    """Return ``n`` distinct prompts of roughly ``prompt_tokens`` tokens each.

    The estimate is coarse (SmolLM2's tokenizer makes about 56 tokens of a 64-token
    request); what matters is that every system under test gets identical text.

    Prompt ``i`` reads the paragraph cyclically from a different word offset and
    starts with its own index, so no two prompts share a prefix: a server with
    prefix caching gets no unfair hits between requests. ``start`` skips the first prompts
    (the result is ``build_prompts(start + n, prompt_tokens)[start:]``), for a set that
    shares no prefix with another one.
    """
    n_words = max(1, round(prompt_tokens * WORDS_PER_TOKEN))
    prompts: list[str] = []
    for i in range(start, start + n):
        # 37 is coprime with the word count, so consecutive prompts start far apart.
        first = (i * 37) % len(_WORDS)
        words = [_WORDS[(first + k) % len(_WORDS)] for k in range(n_words)]
        prompts.append(f"[{i}] " + " ".join(words))
    return prompts
