from __future__ import annotations

import pytest

from configs.settings import Settings, load_settings


def test_defaults_come_from_the_shipped_config_file():
    assert load_settings({}) == Settings()


def test_environment_overrides_single_settings():
    s = load_settings({"LUMEN_MAX_NUM_SEQS": "8", "LUMEN_DTYPE": "float32"})
    assert s.max_num_seqs == 8 and s.dtype == "float32"


def test_config_file_is_chosen_by_environment(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('served_model_name = "mine"\nblock_size = 32\n')
    s = load_settings({"LUMEN_CONFIG": str(path), "LUMEN_BLOCK_SIZE": "8"})
    assert s.served_model_name == "mine"
    assert s.block_size == 8  # environment beats the file


def test_api_key_from_vllm_variable_unless_our_own_is_set():
    assert load_settings({"VLLM_API_KEY": "v"}).api_key == "v"
    assert load_settings({"VLLM_API_KEY": "v", "LUMEN_API_KEY": "ours"}).api_key == "ours"


def test_unknown_keys_in_the_file_are_rejected(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("max_num_seqz = 3\n")
    with pytest.raises(ValueError, match="max_num_seqz"):
        load_settings({"LUMEN_CONFIG": str(path)})


@pytest.mark.parametrize(
    "env",
    [
        {"LUMEN_DTYPE": "float16"},
        {"LUMEN_BLOCK_SIZE": "0"},
        {"LUMEN_KV_CACHE_MEMORY_FRACTION": "1.5"},
        {"LUMEN_TOOL_CALL_PARSER": "granite"},
        {"LUMEN_REASONING_PARSER": "granite"},
        {"LUMEN_CHAT_TEMPLATE_CONTENT_FORMAT": "list"},
        {"LUMEN_NUM_REPLICAS": "0"},
        {"LUMEN_AUTOSCALE": "3:1"},
        {"LUMEN_AUTOSCALE": "2"},
        {"LUMEN_RAY_REQUEST_ROUTER": "random"},
    ],
)
def test_invalid_values_are_rejected(env):
    with pytest.raises(Exception):  # noqa: B017 - cattrs wraps the validator's error
        load_settings(env)


@pytest.mark.parametrize(("raw", "value"), [("false", False), ("0", False), ("On", True)])
def test_boolean_settings_read_words_from_the_environment(raw, value):
    assert load_settings({"LUMEN_ENABLE_PREFIX_CACHING": raw}).enable_prefix_caching is value


def test_a_boolean_setting_rejects_other_words():
    with pytest.raises(ValueError, match="not a boolean"):
        load_settings({"LUMEN_ENABLE_PREFIX_CACHING": "maybe"})


def test_default_serves_the_chat_model_and_minilm():
    names = [(m.name, m.task) for m in load_settings({}).served_models()]
    assert names == [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "auto"),
        ("sentence-transformers/all-MiniLM-L6-v2", "embed"),
    ]


def test_models_from_a_file_and_from_the_environment(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text('[[models]]\nname = "reranker"\nmodel = "/m/rr"\ntask = "score"\n')
    from_file = load_settings({"LUMEN_CONFIG": str(path)})
    assert [(m.name, m.model, m.task) for m in from_file.models] == [("reranker", "/m/rr", "score")]
    from_env = load_settings({"LUMEN_MODELS": '[{"name": "e", "model": "/m/e"}]'})
    assert [(m.name, m.task, m.dtype) for m in from_env.models] == [("e", "auto", "auto")]
    assert load_settings({"LUMEN_MODELS": "[]"}).models == ()


@pytest.mark.parametrize(
    "models",
    [
        '[{"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "model": "/m"}]',  # name taken
        '[{"name": "a", "model": "/m"}, {"name": "a", "model": "/n"}]',
        '[{"name": "a", "model": "/m", "tsk": "embed"}]',  # unknown key
        '[{"name": "a", "model": "/m", "task": "translate"}]',
        '[{"model": "/m"}]',  # no name
    ],
)
def test_bad_model_lists_are_rejected(models):
    with pytest.raises(Exception):  # noqa: B017 - cattrs wraps validator errors
        load_settings({"LUMEN_MODELS": models})


def test_chat_settings_reach_every_model_spec():
    settings = load_settings(
        {"LUMEN_TOOL_CALL_PARSER": "none", "LUMEN_CHAT_TEMPLATE_CONTENT_FORMAT": "openai"}
    )
    main, minilm = settings.served_models()
    assert (main.tool_call_parser, main.chat_template_content_format) == ("none", "openai")
    assert (minilm.tool_call_parser, minilm.chat_template_content_format) == ("hermes", "auto")


@pytest.mark.parametrize("key", ["", " ", "a,,b", "a, "])
def test_an_empty_api_key_is_an_error_not_auth_off(key):
    with pytest.raises(ValueError, match="empty"):
        load_settings({"LUMEN_API_KEY": key})


def test_several_api_keys_separated_by_commas_are_accepted():
    assert load_settings({"LUMEN_API_KEY": "old-key, new-key"}).api_key == "old-key, new-key"


def test_quantization_auto_is_int4_for_the_embedded_model_only():
    auto = Settings()
    assert auto.quantization == "auto"
    assert auto.quantization_for("embedded:smollm2") == "int4"  # its weights are Q4_1
    assert auto.quantization_for("/models/llama") == "none"
    chosen = load_settings({"LUMEN_QUANTIZATION": "none"})
    assert chosen.quantization_for("embedded:smollm2") == "none"
    assert Settings(quantization="int8").quantization_for("/models/llama") == "int8"
