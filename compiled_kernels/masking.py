"""What a layer's attention masks beyond causality: a sliding window and soft-capping."""

from __future__ import annotations

import attrs


@attrs.frozen
class Masking:
    # A query sees only the last `window` positions, itself included; 0: the whole context.
    window: int = 0
    # Scores become softcap * tanh(score / softcap) before the softmax (Gemma 2); 0: as they are.
    softcap: float = 0.0


NO_MASKING = Masking()
