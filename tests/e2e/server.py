"""Start a real hypercorn serving the real model on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDING_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # served beside it by default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        lumen_serve: list[str] | None = None,
        hypercorn_options: tuple[str, ...] = (),
    ) -> None:
        """hypercorn on the app (with these options), or with `lumen_serve` (its arguments)
        the `lumen serve` CLI."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        if lumen_serve is None:
            command = [sys.executable, "-m", "hypercorn", "asgi.app:app"]
            command += ["--bind", f"127.0.0.1:{self.port}", *hypercorn_options]
        else:
            command = [*_lumen(), "serve", *lumen_serve, "--host=127.0.0.1", f"--port={self.port}"]
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env={**_clean_environ(), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                health = httpx.get(self.url + "/health", timeout=2)
            except httpx.TransportError:
                pass
            else:
                if health.status_code == 200:
                    return
                failed = health.headers.get("content-type") == "application/json" and (
                    health.json().get("status") == "failed"
                )
                if failed:  # no point waiting any longer
                    raise RuntimeError(f"model failed to load: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def _lumen() -> list[str]:
    """The console script installed beside this Python, else the module it runs."""
    script = Path(sys.executable).with_name("lumen")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "configs.cli"]


def _clean_environ() -> dict[str, str]:
    """The test process's environment without server settings, so each test says its own."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("LUMEN_") and k != "VLLM_API_KEY"
    }


@contextlib.contextmanager
def running(
    env: dict[str, str], log_path: Path, *, timeout: float = 300.0, **options: object
) -> Iterator[Server]:
    """A Server (options as Server takes them) that is ready, stopped on leaving, even when it
    never became ready."""
    server = Server(env, log_path, **options)  # type: ignore[arg-type]
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()
