"""The fake engine the protocol tests drive is held to the engines' interface."""

from __future__ import annotations

from protocol_fakes import ScriptedEngine, served

from protocol.served_model import GenerationEngine


def test_the_scripted_engine_satisfies_the_generation_engine_interface() -> None:
    assert isinstance(ScriptedEngine(), GenerationEngine)


def test_a_served_model_reads_the_engines_tokenizer_and_limits() -> None:
    engine = ScriptedEngine(name="m", max_model_len=99)
    model = served(engine)
    assert (model.name, model.task, model.max_model_len) == ("m", "generate", 99)
    assert model.tokenizer is engine.tokenizer and model.vocab_size == engine.vocab_size
