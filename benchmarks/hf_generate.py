"""Baseline: plain transformers `generate` on the same prompts as load.py.

    python benchmarks/hf_generate.py --model-dir DIR --batch-sizes 1 32 \
        --max-new-tokens 128 --dtype bfloat16 --json hf.json

For each batch size it runs one warm-up generate and one timed generate (greedy,
left padding, exactly max-new-tokens per row) and reports output tokens/second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

# Same prompt builder as load.py, importable when run as `python benchmarks/hf_generate.py`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompts import build_prompts  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def encode(
    tok: PreTrainedTokenizerBase, prompts: list[str], chat: bool, device: str
) -> dict[str, torch.Tensor]:
    if chat:
        # Match the server's chat endpoint: one user message plus the assistant header.
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        # The template already contains any BOS token; don't add a second one.
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    else:
        enc = tok(prompts, return_tensors="pt", padding=True)
    return {k: v.to(device) for k, v in enc.items()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_batch(
    model: Any,
    tok: PreTrainedTokenizerBase,
    args: argparse.Namespace,
    batch: int,
    prompts: list[str] | None = None,
) -> dict[str, Any]:
    """One warm-up and one timed generate of ``batch`` prompts (``prompts`` when given,
    else the first ``batch`` of build_prompts)."""
    if prompts is None:
        prompts = build_prompts(batch, args.prompt_tokens)
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for batch size {batch}")
    inputs = encode(tok, prompts, args.chat, args.device)
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        # Forces every row to the full length, like ignore_eos on the server side.
        "min_new_tokens": args.max_new_tokens,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
    }
    with torch.inference_mode():
        model.generate(**inputs, **gen_kwargs)  # warm-up: allocator, kernels, caches
        sync(args.device)
        start = time.perf_counter()
        out = model.generate(**inputs, **gen_kwargs)
        sync(args.device)
        latency = time.perf_counter() - start
    new_tokens = out.shape[1] - inputs["input_ids"].shape[1]
    total = batch * new_tokens
    return {
        "batch_size": batch,
        "prompt_len_padded": int(inputs["input_ids"].shape[1]),
        "new_tokens_per_row": int(new_tokens),
        "latency_s": latency,
        "output_tok_s": total / latency,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="HF folder: config.json, *.safetensors, tokenizer files",
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    p.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wrap prompts in the chat template (default: on, like /chat)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own default)"
    )
    p.add_argument("--json", type=Path, default=None, help="write results here")
    return p.parse_args(argv)


def load(args: argparse.Namespace) -> tuple[Any, PreTrainedTokenizerBase]:
    """Set the thread count; load the tokenizer (left padding) and the model."""
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    tok.padding_side = "left"  # decoder-only models must be left-padded for batching
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=DTYPES[args.dtype])
    model.to(args.device).eval()
    return model, tok


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model, tok = load(args)

    print(
        f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"chat={args.chat}",
        flush=True,
    )
    print(f"{'batch':>5} {'prompt len':>10} {'new tok':>7} {'latency s':>10} {'out tok/s':>10}")
    rows: list[dict[str, Any]] = []
    for batch in args.batch_sizes:
        r = run_batch(model, tok, args, batch)
        rows.append(r)
        print(
            f"{r['batch_size']:>5} {r['prompt_len_padded']:>10} {r['new_tokens_per_row']:>7} "
            f"{r['latency_s']:>10.3f} {r['output_tok_s']:>10.1f}",
            flush=True,
        )
    if args.json:
        config = {**vars(args), "threads": torch.get_num_threads()}
        report = {"config": config, "results": rows}
        args.json.write_bytes(orjson.dumps(report, default=str, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
