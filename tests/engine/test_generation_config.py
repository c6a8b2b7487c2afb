"""generation_config.json: which sampling defaults a model folder gives its served model."""

from __future__ import annotations

import json
import logging

import pytest

from configs.settings import ModelSpec, Settings
from engine.loader import generation_defaults
from protocol.served_model import load_served_model

MODEL_CONFIG = {
    "bos_token_id": 1,
    "eos_token_id": 2,
    "do_sample": True,  # ignored, as vLLM ignores it
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 30,
    "repetition_penalty": None,  # unset
    "max_new_tokens": 50,
}
FROM_MODEL = {"temperature": 0.7, "top_p": 0.8, "top_k": 30, "max_tokens": 50}


def write_config(folder, values) -> None:
    (folder / "generation_config.json").write_text(json.dumps(values))


@pytest.mark.parametrize("tiny_model_dir", ["llama"], indirect=True)
def test_the_served_model_takes_its_defaults_from_the_model_folder(tiny_model_dir, caplog):
    model_dir, _ = tiny_model_dir
    write_config(model_dir, MODEL_CONFIG)
    spec = ModelSpec(name="tiny", model=str(model_dir))
    settings = Settings(dtype="float32", kv_cache_memory_gb=0.01, models=())
    with caplog.at_level(logging.INFO, logger="protocol.served_model"):
        served = load_served_model(spec, settings)
    assert served.generation_defaults == FROM_MODEL
    assert "default sampling parameters from generation_config.json" in caplog.text
    assert "'temperature': 0.7" in caplog.text


def test_vllm_turns_them_off_and_a_folder_replaces_them(tmp_path):
    model_dir, other = tmp_path / "model", tmp_path / "other"
    model_dir.mkdir(), other.mkdir()
    write_config(model_dir, MODEL_CONFIG)
    write_config(other, {"temperature": 0.3, "min_p": 0.1})
    assert generation_defaults(model_dir, "auto") == FROM_MODEL
    assert generation_defaults(model_dir, "vllm") == {}
    assert generation_defaults(model_dir, str(other)) == {"temperature": 0.3, "min_p": 0.1}


def test_a_missing_file_means_no_defaults_unless_a_folder_was_named(tmp_path):
    assert generation_defaults(tmp_path, "auto") == {}
    with pytest.raises(FileNotFoundError, match="generation_config.json"):
        generation_defaults(tmp_path, str(tmp_path))


def test_a_value_that_is_not_a_number_is_refused(tmp_path):
    write_config(tmp_path, {"temperature": "hot"})
    with pytest.raises(ValueError, match="temperature"):
        generation_defaults(tmp_path, "auto")


def test_the_embedded_model_has_no_sampling_defaults(smollm2_dir):
    """The GGUF carries no sampling settings, so the generation_config.json transformers writes
    when converting it holds only token ids: vLLM's neutral defaults apply."""
    assert generation_defaults(smollm2_dir, "auto") == {}
