from __future__ import annotations

from engine.detokenizer import IncrementalDetokenizer


def _stream(tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], str | None]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("Hi:"), stop=stop)
    pieces: list[str] = []
    for token_id in ids:
        piece, matched = detok.push([token_id])
        pieces.append(piece)
        if matched is not None:
            return pieces, matched
    pieces.append(detok.flush())
    return pieces, None


def test_incremental_text_equals_full_decode(smollm2_tokenizer):
    text = " Hello world, ünïcödé and emoji 🎉 done."
    pieces, matched = _stream(smollm2_tokenizer, text)
    assert matched is None
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)  # no half characters are ever released


def test_stop_string_is_cut_and_never_released(smollm2_tokenizer):
    pieces, matched = _stream(smollm2_tokenizer, " one two STOP three", stop=("STOP",))
    assert matched == "STOP"
    assert "".join(pieces) == " one two "


def test_partial_stop_string_is_held_back_until_it_cannot_match(smollm2_tokenizer):
    detok = IncrementalDetokenizer(smollm2_tokenizer, [1], stop=("\n\nUser:",))
    released = []
    for token_id in smollm2_tokenizer.encode("a\n\nb", add_special_tokens=False):
        released.append(detok.push([token_id])[0])
    # The "\n\n" was held back while it could start the stop string, then released with "b".
    assert "".join(released) == "a\n\nb"
    assert released[-1].endswith("\n\nb")


def test_special_tokens_are_skipped(smollm2_tokenizer):
    detok = IncrementalDetokenizer(smollm2_tokenizer, [1])
    eos = smollm2_tokenizer.eos_token_id
    assert detok.push([eos]) == ("", None)


def test_held_back_tail_is_the_longest_stop_prefix_the_text_ends_with():
    from engine.detokenizer import _StopPrefix

    def brute(text: str, stop: str) -> int:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                return n
        return 0

    for stop in ("aab", "abab", "aaaa", "abcab", "b"):
        tail, text = _StopPrefix(stop), ""
        for piece in ("a", "ab", "", "aab", "aba", "b", "aaa", "c", "abab", "a"):
            text += piece
            tail.feed(piece)
            assert tail.matched == brute(text, stop), (stop, text)
