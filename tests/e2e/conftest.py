from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.server import running


@pytest.fixture(scope="session")
def server(tmp_path_factory, smollm2_dir):
    """The embedded model in float32, unquantized, so greedy output can be compared with
    transformers; requests may bring their own chat template (tests of tools and templates
    do)."""
    env = {
        "LUMEN_DTYPE": "float32",
        "LUMEN_QUANTIZATION": "none",
        "LUMEN_TRUST_REQUEST_CHAT_TEMPLATE": "true",
    }
    with running(env, tmp_path_factory.mktemp("fp32") / "server.log") as s:
        yield s


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory, smollm2_dir):
    """The default configuration (dtype auto), with an API key set the way vLLM users do, and
    sleep mode on."""
    env = {"VLLM_API_KEY": "token-abc123", "LUMEN_ENABLE_SLEEP_MODE": "true"}
    with running(env, tmp_path_factory.mktemp("auth") / "server.log") as s:
        yield s


@pytest.fixture(scope="session")
def library_matmul_server(tmp_path_factory, smollm2_dir):
    """Linear layers through the library GEMM (prompt tokens in position-aligned tiles, the
    other rows packed), with a step budget small enough that concurrent prompts get cut into
    chunks at other places than when they come alone."""
    env = {
        "LUMEN_DTYPE": "float32",
        "LUMEN_MATMUL": "library",
        "LUMEN_QUANTIZATION": "none",
        "LUMEN_MAX_NUM_BATCHED_TOKENS": "100",
    }
    with running(env, tmp_path_factory.mktemp("library") / "server.log") as s:
        yield s


@pytest.fixture(scope="session")
def bf16_kv_cache_server(tmp_path_factory, smollm2_dir):
    """A float32 model (int4, as the embedded default) over a bfloat16 KV cache
    (--kv-cache-dtype bfloat16), with prompts cut into chunks that read the cache back."""
    env = {
        "LUMEN_DTYPE": "float32",
        "LUMEN_KV_CACHE_DTYPE": "bfloat16",
        "LUMEN_MAX_NUM_BATCHED_TOKENS": "100",
    }
    with running(env, tmp_path_factory.mktemp("bf16_kv") / "server.log") as s:
        yield s


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
