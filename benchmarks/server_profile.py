"""Where a serving process's time goes under streaming load, against its engine in process.

    python benchmarks/server_profile.py [--concurrency 32] [--seconds 12] [--env KEY=VALUE ...]

1. In process: engine_step.py's 32-sequence decode step (ms), the engine alone.
2. Served: hypercorn on the embedded model (LUMEN_MODELS=[], request log off, plus each
   --env), load.py's streaming chat level at --concurrency (64-token prompts, 128 tokens,
   ignore_eos, 2 x concurrency requests, at least 16). Once decoding has begun, py-spy samples
   the worker process's threads for --seconds at 100 Hz (running samples only; needs `py-spy`, which
   `ray[serve]` brings).

It prints one JSON report: out tok/s and ITL p50 at that level; the 32-sequence step in
process and the ratio ITL / step (1.0: the socket sees every step as fast as the engine makes
it); for each thread, the share of wall time it was running, and where: for the engine thread
the share inside the C kernels (compiled_kernels/, GIL released), in torch and in Python; for
the others their top functions. One run: compare ratios on one machine only, and name the CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import level_prompts, make_args, run_one_level  # noqa: E402

from tests.e2e.server import Server  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
RATE_HZ = 100


def in_process_step_ms() -> float:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "engine_step.py"), "--variant", "c-kernels"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["decode32_bf16_ms"]


def worker_pid(server: Server) -> int:
    """hypercorn serves from a child process; the sampled one is that child."""
    children = subprocess.run(
        ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    return int(children[-1]) if children else server.proc.pid


def sample(pid: int, seconds: float, out: Path) -> None:
    command = ["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(RATE_HZ)]
    command += ["-f", "raw", "-o", str(out), "--threads", "--nonblocking"]
    subprocess.run(command, capture_output=True, check=True)


def _where(frames: list[str]) -> str:
    leaf = frames[-1]
    if "compiled_kernels/" in leaf:
        return "C kernels"
    if "torch/" in leaf or "/_VF" in leaf:
        return "torch"
    return "Python"


def summarize_samples(raw: Path, seconds: float) -> dict[str, dict]:
    per_thread: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    where: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        per_thread[thread][frames[-1]] += int(count)
        where[thread][_where(frames[1:] or frames)] += int(count)
    total = RATE_HZ * seconds
    report = {}
    for thread, leaves in sorted(per_thread.items(), key=lambda kv: -sum(kv[1].values())):
        busy = sum(leaves.values())
        report[thread] = {
            "running_share": round(busy / total, 3),
            "of_which": {k: round(v / busy, 3) for k, v in where[thread].most_common()},
            "top": [[name, round(n / busy, 3)] for name, n in leaves.most_common(6)],
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--env", nargs="*", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args()
    report: dict = {"in_process_decode32_ms": round(in_process_step_ms(), 1)}
    env = {"LUMEN_MODELS": "[]", "LUMEN_LOG_REQUESTS": "false"}
    env.update(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(env, Path(tmp) / "server.log")
        try:
            server.wait_ready()
            load = make_args(model=MODEL, base_url=server.url + "/v1")
            # Enough requests that decoding outlasts the sampling window at any concurrency.
            num_requests = max(2 * args.concurrency, 16)
            warm, (batch,) = level_prompts([num_requests], load.prompt_tokens)
            raw = Path(tmp) / "samples.txt"
            # Sampling starts once the first prefills are behind (a few seconds in).
            sampler = threading.Timer(8.0, sample, (worker_pid(server), args.seconds, raw))
            sampler.start()
            summary = run_one_level(load, batch, args.concurrency, warmup_prompt=warm)
            sampler.join()
            report["served"] = {
                "concurrency": args.concurrency,
                "out_tok_s": round(summary["output_tok_s"], 1),
                "itl_p50_ms": round(summary["itl_ms_p50"], 1),
            }
            report["threads"] = summarize_samples(raw, args.seconds)
        finally:
            server.stop()
    itl = report["served"]["itl_p50_ms"]
    if itl and args.concurrency == 32:
        report["itl_over_in_process_step"] = round(itl / report["in_process_decode32_ms"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
