"""--speculative-config as vLLM takes it: a JSON object, from the command line, the environment
or a config file (where YAML may give it as a mapping)."""

from __future__ import annotations

import pytest

from configs.cli import resolve
from configs.settings import load_settings
from configs.speculative import SpeculativeConfig, parse_speculative_config


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"method": "ngram", "num_speculative_tokens": 4}', (4, 5, 5)),
        ('{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}', (3, 3, 3)),
        ('{"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 2}', (2, 2, 2)),
        (
            '{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_min": 1, '
            '"prompt_lookup_max": 4}',
            (5, 1, 4),
        ),
        ('{"model": "[ngram]", "num_speculative_tokens": 2}', (2, 5, 5)),  # older spelling
        (
            '{"method": "ngram", "num_speculative_tokens": 2, "disable_by_batch_size": 4}',
            (2, 5, 5, 4),
        ),  # fmt: skip
    ],
)
def test_valid_configs_fill_the_lookup_bounds_as_vllm_does(raw, expected) -> None:
    assert parse_speculative_config(raw) == SpeculativeConfig("ngram", *expected)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"method": "eagle", "num_speculative_tokens": 2}', "not supported"),
        ('{"num_speculative_tokens": 2}', "not supported"),
        ('{"method": "ngram"}', "num_speculative_tokens >= 1"),
        ('{"method": "ngram", "num_speculative_tokens": 0}', "num_speculative_tokens >= 1"),
        ('{"method": "ngram", "num_speculative_tokens": "4"}', "must be an integer"),
        ('{"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 0}', "1 <="),
        ('{"method": "ngram", "num_speculative_tokens": 2, "model": "x"}', "unknown keys"),
        (
            '{"method": "ngram", "num_speculative_tokens": 2, "disable_by_batch_size": 1}',
            ">= 2",
        ),  # fmt: skip
        ("[1, 2]", "JSON object"),
        ("{nope", "not JSON"),
    ],
)
def test_invalid_configs_say_what_is_wrong(raw, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_speculative_config(raw)


def test_the_setting_from_every_source() -> None:
    raw = '{"method": "ngram", "num_speculative_tokens": 4}'
    assert load_settings({}).speculative is None
    from_env = load_settings({"LUMEN_SPECULATIVE_CONFIG": raw})
    assert from_env.speculative == SpeculativeConfig("ngram", 4, 5, 5)
    settings, _, _ = resolve(["serve", "--speculative-config", raw], {})
    assert settings.speculative == SpeculativeConfig("ngram", 4, 5, 5)
    with pytest.raises(ValueError, match="not supported"):
        load_settings({"LUMEN_SPECULATIVE_CONFIG": '{"method": "medusa"}'})


def test_a_yaml_config_file_may_give_it_as_a_mapping(tmp_path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "speculative-config:\n  method: ngram\n  num_speculative_tokens: 3\n"
        "  prompt_lookup_max: 4\n"
    )
    settings = load_settings({"LUMEN_CONFIG": str(path)})
    assert settings.speculative == SpeculativeConfig("ngram", 3, 4, 4)
    settings, _, _ = resolve(["serve", "--config", str(path)], {})
    assert settings.speculative == SpeculativeConfig("ngram", 3, 4, 4)
