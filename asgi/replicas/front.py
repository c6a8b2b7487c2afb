"""The front deployment: the ingress behind Ray's HTTP proxy.

It reads each request's body, keys it by its prompt's prefixes and forwards it to an engine
replica through a Ray deployment handle, whose request router picks the replica; the replica's
messages go back to the client as they come. It holds no model, so it reserves no CPU. It also
keeps the directory of replicas and their metrics endpoints (`GET /metrics/replicas`).

When Ray cannot place the request (every replica's queue full and the handle's own queue too)
the client gets 503. When the replica dies before anything was sent, the request is tried once
more on another; after that, the response ends where it was cut (a stream with an error event).
A client that goes away cancels the call, which aborts its sequences on the replica.
"""

from __future__ import annotations

import logging

import anyio
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from asgi.errors import send_error
from asgi.replicas.directory import ReplicaDirectory, ReplicaInfo
from asgi.replicas.forwarding import ForwardedRequest, portable_scope, read_body
from asgi.replicas.prefixes import prefix_keys
from asgi.router import Message, Receive, Scope, Send
from configs.settings import Settings
from protocol.http import error_body

logger = logging.getLogger("lumen.front")

FRONT = "front"  # the deployment's name
SERVICE_DISCOVERY_PATH = "/metrics/replicas"  # directory.py
_REPLICA_GONE = (RayActorError, ActorUnavailableError)


async def _cancel_on_disconnect(receive: Receive, cancel_scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    cancel_scope.cancel()


class FrontApp:
    def __init__(
        self, engine: DeploymentHandle, settings: Settings, replicas: ReplicaDirectory
    ) -> None:
        self.engine = engine.options(method_name="forward", stream=True)
        self.max_body_bytes = settings.max_request_body_bytes
        self.replicas = replicas

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup: nothing to load here
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        if (scope["method"], scope["path"]) == ("GET", SERVICE_DISCOVERY_PATH):
            body = self.replicas.service_discovery()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        body = await read_body(receive, self.max_body_bytes)
        if body is None:
            return  # the client left before sending its request
        request = ForwardedRequest(portable_scope(scope), body, prefix_keys(body))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
            await self._relay(request, send)
            tg.cancel_scope.cancel()

    async def _relay(self, request: ForwardedRequest, send: Send) -> None:
        for attempt in (1, 2):
            started = streaming = False
            responses = self.engine.remote(request)
            try:
                async for message in responses:
                    if message["type"] == "http.response.start":
                        message, streaming = _without_request_id(message)
                    await send(message)
                    started = True
                return
            except BackPressureError:
                await send_error(
                    send,
                    503,
                    "Every replica is at capacity; retry later.",
                    "ServiceUnavailableError",
                )
                return
            except _REPLICA_GONE as exc:
                logger.warning("replica lost during a request (attempt %d): %s", attempt, exc)
                if started:
                    await _end_cut_response(send, streaming)
                    return
            finally:
                responses.cancel()  # a no-op once it finished; else the replica stops work
        await send_error(
            send, 503, "The replica serving this request died; retry.", "ServiceUnavailableError"
        )


def _without_request_id(start: Message) -> tuple[Message, bool]:
    """The response's start without its X-Request-Id, which Ray's proxy adds (the same id: the
    proxy put it in the request's headers, which the app echoes); and whether it streams."""
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"x-request-id"]
    content_type = dict(headers).get(b"content-type", b"")
    return {**start, "headers": headers}, content_type.startswith(b"text/event-stream")


async def _end_cut_response(send: Send, streaming: bool) -> None:
    body = b""
    if streaming:
        error = error_body(503, "The replica serving this stream died.", "ServiceUnavailableError")
        body = b"data: " + error + b"\n\n"
    await send({"type": "http.response.body", "body": body, "more_body": False})


@serve.ingress()
class Front:
    """The ingress deployment (see the module's docstring)."""

    def __init__(self, engine: DeploymentHandle, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.replicas = ReplicaDirectory()

    def __serve_build_asgi_app__(self) -> FrontApp:
        return FrontApp(self.engine, self.settings, self.replicas)

    def announce_replica(self, info: ReplicaInfo) -> None:
        """Called by each engine replica every ANNOUNCE_PERIOD_S."""
        self.replicas.announce(info)
