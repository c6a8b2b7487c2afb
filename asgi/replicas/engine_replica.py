"""The engine deployment: each replica is one process running the app with its models.

A replica takes traffic only once its models have loaded (the constructor waits for them; a
model that fails to load fails the replica, and Ray reports it). Ray calls check_health
periodically: a dead engine, or a step stuck past step_watchdog_s, fails it, and Ray replaces
the replica. Each replica serves its metrics on a port of its own and announces it to the front
(directory.py); its responses say which replica it is (X-Lumen-Replica).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import ray
from prometheus_client import start_http_server
from ray import serve

from asgi.app import build_app, configure_logging
from asgi.replicas.directory import ANNOUNCE_PERIOD_S, ReplicaInfo
from asgi.replicas.forwarding import ForwardedRequest, run_forwarded
from asgi.replicas.front import FRONT
from asgi.router import ASGIApp, Message
from configs.settings import Settings
from observability.metrics import REGISTRY
from protocol.operations.handlers import engine_problems

logger = logging.getLogger("lumen.replica")
REPLICA_HEADER = b"x-lumen-replica"


class _Lifespan:
    """Drives an ASGI app's lifespan (startup, later shutdown) outside an HTTP server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}  # what the app keeps for its requests (ServerState)
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        answer = await self._from_app.get()
        if answer["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app's startup failed: {answer.get('message')}")

    async def shutdown(self) -> None:
        if self._task is None:
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        await self._task


class EngineReplica:
    async def __init__(self, settings: Settings) -> None:
        configure_logging(settings.log_level)
        self.app = build_app(settings)
        self.lifespan = _Lifespan(self.app)
        await self.lifespan.startup()
        self.server = self.lifespan.state["server"]
        while self.server.status == "loading":
            await asyncio.sleep(0.1)
        if self.server.status == "failed":
            raise RuntimeError(f"the replica's models did not load: {self.server.error}")
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id
        host = ray.util.get_node_ip_address()
        self.metrics_server, _ = start_http_server(0, addr=host, registry=REGISTRY)
        target = f"{host}:{self.metrics_server.server_port}"
        self.info = ReplicaInfo(self.replica_id, target, os.getpid())
        self.announcer = asyncio.create_task(self._announce(context.app_name))

    async def _announce(self, app_name: str) -> None:
        front = serve.get_deployment_handle(FRONT, app_name=app_name)
        while True:
            try:
                await front.announce_replica.remote(self.info)
            except Exception as exc:  # the front restarting: the next period tries again
                logger.debug("announcing to the front failed: %s", exc)
            await asyncio.sleep(ANNOUNCE_PERIOD_S)

    async def forward(self, request: ForwardedRequest) -> AsyncIterator[Message]:
        async for message in run_forwarded(self.app, self.lifespan.state, request):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (REPLICA_HEADER, self.replica_id.encode())]
                message = {**message, "headers": headers}
            yield message

    def check_health(self) -> None:
        if self.server.status != "ready":
            raise RuntimeError(f"the replica is {self.server.status}: {self.server.error}")
        problems = engine_problems(self.server)
        if problems:
            raise RuntimeError("; ".join(f"{name}: {what}" for name, what in problems.items()))

    async def __del__(self) -> None:
        self.announcer.cancel()
        self.metrics_server.shutdown()
        await self.lifespan.shutdown()
