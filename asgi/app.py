"""The ASGI application: `hypercorn asgi.app:app`.

The middleware stack is listed outermost first in build_app(). The lifespan owns the engines, one
per served model: they load in the background so hypercorn's startup never times out, and
/health answers 503 "loading" until all are ready.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import attrs

from asgi.access_log import AccessLogMiddleware
from asgi.auth import AuthMiddleware
from asgi.body_limits import BodyLimitMiddleware
from asgi.cors import CORSMiddleware
from asgi.draining import DrainingMiddleware
from asgi.errors import ErrorMiddleware
from asgi.metrics import MetricsMiddleware
from asgi.request_id import RequestIdMiddleware
from asgi.router import ASGIApp, Receive, Router, Scope, Send
from configs.settings import Settings, load_settings
from protocol.route import paths_where
from protocol.routes import build_routes
from protocol.served_model import load_served_model
from protocol.server_state import ServerState

logger = logging.getLogger("lumen")


class Lifespan:
    """Answers lifespan events and passes HTTP through to the middleware stack."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        # Made here, not at startup, so whoever runs the app (configs/cli.py) can reach it, e.g.
        # to set `draining` when a shutdown signal arrives.
        self.server = ServerState(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # No route speaks WebSocket: refuse the handshake before any middleware or handler
            # runs (closing before accepting is answered with HTTP 403).
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await receive()  # lifespan.startup
        server = self.server
        logger.info("settings: %s", _describe(self.settings))
        # hypercorn copies this dict into every request scope; the ServerState inside is shared.
        scope.setdefault("state", {})["server"] = server
        async with anyio.create_task_group() as tg:
            tg.start_soon(_serve_models, server)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            tg.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})


async def _serve_models(server: ServerState) -> None:
    """Loads every configured model (one at a time, in a worker thread), then runs each one's
    engine loop side by side: a long generation never holds up an embedding."""
    settings = server.settings
    models = []
    for spec in settings.served_models():
        try:
            model = await anyio.to_thread.run_sync(load_served_model, spec, settings)
        except Exception as exc:
            logger.exception("loading %s (%s) failed", spec.name, spec.model)
            server.status, server.error = "failed", f"{spec.name}: {type(exc).__name__}: {exc}"
            return
        models.append(model)
    for model in models:
        server.models[model.name] = model
    server.status = "ready"
    logger.info("ready: serving %s", ", ".join(server.models))
    async with anyio.create_task_group() as tg:
        for model in models:
            tg.start_soon(_run_engine, server, model.engine)


async def _run_engine(server: ServerState, engine: Any) -> None:
    try:
        await engine.run()
    except Exception as exc:  # already logged by the engine with its traceback
        server.status = "failed"
        server.error = f"engine for {engine.served_model_name} died: {type(exc).__name__}: {exc}"


def _describe(settings: Settings) -> str:
    values = attrs.asdict(settings)
    values["api_key"] = "***" if settings.api_key else None
    return ", ".join(f"{k}={v}" for k, v in values.items())


def build_app(settings: Settings) -> ASGIApp:
    routes = build_routes(playground=settings.playground)
    app: ASGIApp = Router(
        {(route.method, route.path): route.handler for route in routes},
        bodiless=frozenset((route.method, route.path) for route in routes if route.request is None),
    )
    # Outermost first (each wraps the ones after it): the request id sits outside the error
    # handler so even a 500 carries it; metrics sit outside auth so 401s are counted.
    stack: list[tuple[type, dict[str, Any]]] = [
        (RequestIdMiddleware, {}),
        (ErrorMiddleware, {}),
        (MetricsMiddleware, {"known_paths": frozenset(route.path for route in routes)}),
        (DrainingMiddleware, {"operational_paths": paths_where(routes, "operational")}),
        (
            AuthMiddleware,
            {"api_key": settings.api_key, "public_paths": paths_where(routes, "public")},
        ),
        # Inside auth, as in vLLM: a 401 carries no CORS headers; preflights pass auth.
        (
            CORSMiddleware,
            {
                "allowed_origins": settings.allowed_origins,
                "allowed_methods": settings.allowed_methods,
                "allowed_headers": settings.allowed_headers,
                "allow_credentials": settings.allow_credentials,
            },
        ),
        # After auth: a client without the key never gets us to buffer its body.
        (
            BodyLimitMiddleware,
            {
                "max_bytes": settings.max_request_body_bytes,
                "timeout_s": settings.request_body_timeout_s,
            },
        ),
    ]
    if settings.log_requests:
        # Inside the request id (the line carries it), outside the error handler (a crash is
        # logged with the 500 the client got).
        stack.insert(1, (AccessLogMiddleware, {}))
    for middleware, options in reversed(stack):
        app = middleware(app, **options)
    return Lifespan(app, settings=settings)


def configure_logging(level: str) -> None:
    # force: `lumen serve` configures again, with its own settings, after this module's import.
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # hypercorn prints its own lines; don't print them a second time through the root logger.
    for name in ("hypercorn.error", "hypercorn.access"):
        logging.getLogger(name).propagate = False


_settings = load_settings()
configure_logging(_settings.log_level)
app = build_app(_settings)
