from __future__ import annotations

import logging

import attrs
import pytest

from configs.cli import build_parser, resolve, warn_if_open
from configs.settings import Settings

SMOLLM2_NAME = Settings().served_model_name


def serve(*args: str, env: dict[str, str] | None = None) -> Settings:
    return resolve(["serve", *args], {} if env is None else env)[0]


def test_no_options_serve_the_defaults_on_every_interface():
    settings, host, port = resolve(["serve"], {})
    assert settings == Settings()
    assert (host, port) == ("0.0.0.0", 8000)


def test_vllm_option_names_set_their_settings():
    settings, host, port = resolve(
        [
            "serve",
            "embedded:smollm2",
            "--host=127.0.0.1",
            "--port=9001",
            "--api-key=k",
            "--served-model-name=mine",
            "--chat-template=tests/templates/hermes_tools.jinja",
            "--chat-template-content-format=openai",
            "--max-model-len=512",
            "--max-num-seqs=8",
            "--max-num-batched-tokens=256",
            "--dtype=float32",
            "--kv-cache-dtype=bfloat16",
            "--max-logprobs=5",
            "--generation-config=vllm",
            "--enable-request-id-headers",
            "--disable-log-requests",
            "--no-enable-prefix-caching",
            "--models=[]",
        ],
        {},
    )
    assert (host, port) == ("127.0.0.1", 9001)
    assert attrs.asdict(settings, recurse=False) == attrs.asdict(
        Settings(
            api_key="k",
            served_model_name="mine",
            chat_template="tests/templates/hermes_tools.jinja",
            chat_template_content_format="openai",
            max_model_len=512,
            max_num_seqs=8,
            max_num_batched_tokens=256,
            dtype="float32",
            kv_cache_dtype="bfloat16",
            max_logprobs=5,
            generation_config="vllm",
            log_requests=False,
            enable_prefix_caching=False,
            models=(),
        ),
        recurse=False,
    )


def test_every_setting_is_an_option():
    help_text = build_parser().format_help()
    for field in attrs.fields(Settings):
        assert f"--{field.name.replace('_', '-')} " in help_text, field.name


def test_new_settings_options_parse():
    s = serve(
        "--max-queued-sequences=3",
        "--max-queued-tokens=500",
        "--max-request-body-bytes=1000",
        "--request-body-timeout-s=2.5",
        "--shutdown-timeout-s=0",
        "--no-log-requests",
        "--models",
        '[{"name": "e", "model": "embedded:all-minilm-l6-v2", "task": "embed"}]',
    )
    assert (s.max_queued_sequences, s.max_queued_tokens, s.max_request_body_bytes) == (3, 500, 1000)
    assert (s.request_body_timeout_s, s.shutdown_timeout_s, s.log_requests) == (2.5, 0.0, False)
    assert [m.name for m in s.models] == ["e"]


@pytest.mark.parametrize("argv", [["serve", "--help"], ["--help"]])
def test_help_lists_options_with_defaults(argv, capsys):
    with pytest.raises(SystemExit) as info:
        resolve(argv, {})
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "--max-num-seqs MAX_NUM_SEQS most sequences in the running batch (default: 64)" in out
    assert "--port PORT port (default: 8000)" in out
    assert "--generation-config GENERATION_CONFIG" in out and "(default: auto)" in out
    assert "--enable-prefix-caching, --no-enable-prefix-caching" in out
    assert "--shutdown-timeout-s SHUTDOWN_TIMEOUT_S" in out and "(default: 30.0)" in out


def test_the_model_is_served_under_its_own_name_unless_named():
    assert serve("/models/llama").served_model_name == "/models/llama"
    assert serve("--model=/models/llama").served_model_name == "/models/llama"
    assert serve("/models/llama", "--served-model-name=x").served_model_name == "x"
    env = {"LUMEN_SERVED_MODEL_NAME": "from-env"}
    assert serve("/models/llama", env=env).served_model_name == "from-env"
    # The embedded model keeps its Hugging Face name.
    assert serve("embedded:smollm2").served_model_name == SMOLLM2_NAME


def test_command_line_beats_environment_beats_config_file_beats_defaults(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("max-num-seqs: 4\nmax_model_len: 512\nblock-size: 32\nport: 9002\n")
    env = {"LUMEN_MAX_NUM_SEQS": "6", "LUMEN_MAX_MODEL_LEN": "1024"}
    settings, _, port = resolve(["serve", f"--config={config}", "--max-num-seqs=8"], env)
    assert settings.max_num_seqs == 8  # command line
    assert settings.max_model_len == 1024  # environment over the file
    assert settings.block_size == 32  # the file over the default
    assert settings.max_num_batched_tokens == Settings().max_num_batched_tokens
    assert port == 9002
    assert resolve(["serve", f"--config={config}", "--port=9003"], {})[2] == 9003


def test_yaml_config_takes_vllm_style_keys(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(
        "model: /models/llama\n"
        "served_model_name: llama\n"
        "enable-prefix-caching: false\n"
        "disable-log-requests: true\n"
        "enable-request-id-headers: true\n"
        "host: 127.0.0.1\n"
        "models: []\n"
    )
    settings, host, _ = resolve(["serve", "--config", str(config)], {})
    assert (settings.model, settings.served_model_name) == ("/models/llama", "llama")
    assert settings.enable_prefix_caching is False and settings.log_requests is False
    assert settings.models == () and host == "127.0.0.1"
    # The model named in the file is served under its own name too, and MODEL beats it.
    config.write_text("model: /models/llama\nmodels: '[]'\n")
    assert serve("--config", str(config)).served_model_name == "/models/llama"
    assert serve("/models/other", "--config", str(config)).model == "/models/other"


def test_a_toml_config_file_works_too(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        "max_num_seqs = 4\n[[models]]\nname = 'e'\nmodel = 'embedded:all-minilm-l6-v2'\n"
    )
    s = serve("--config", str(config))
    assert s.max_num_seqs == 4 and [m.name for m in s.models] == ["e"]


def test_lumen_config_is_the_file_without_config(tmp_path):
    config = tmp_path / "env.toml"
    config.write_text("block_size = 8\n")
    assert serve(env={"LUMEN_CONFIG": str(config)}).block_size == 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-num-seqs=x"], "invalid int value"),
        (["--dtype=float16"], "invalid choice"),
        (["--kv-cache-dtype=fp8"], "invalid choice"),  # vLLM's fp8 caches: not here
        (["--block-size=0"], "block_size must be positive"),
        (["--models={}"], "expected a JSON array"),
    ],
)
def test_invalid_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        serve(*argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_config_file_keys_are_usage_errors(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("max-num-seqz: 4\n")
    with pytest.raises(SystemExit):
        serve("--config", str(config))
    err = capsys.readouterr().err
    assert "unknown options" in err and "max_num_seqz" in err


@pytest.mark.parametrize(
    ("host", "key", "warned"),
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("0.0.0.0", "k", False),
        ("127.0.0.1", None, False),
    ],
)
def test_serving_beyond_loopback_without_a_key_is_warned_about(host, key, warned, caplog):
    with caplog.at_level(logging.WARNING, logger="lumen"):
        warn_if_open(host, Settings(api_key=key))
    assert ("WITHOUT AN API KEY" in caplog.text) == warned


def test_replicas_without_ray_installed_say_what_to_install(monkeypatch):
    import importlib.util

    from configs import cli

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ray" else real_find_spec(name, *a),
    )
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[ray\]'"):
        cli.serve(serve("--num-replicas", "2"), "127.0.0.1", 8000)


def test_the_playground_is_on_unless_disabled():
    assert serve().playground
    assert not serve("--disable-playground").playground
    assert not serve("--no-playground").playground
    assert not serve(env={"LUMEN_PLAYGROUND": "false"}).playground
