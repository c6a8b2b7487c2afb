"""CORS, as vLLM configures Starlette's: allowed origins, methods and headers (`["*"]` each by
default) and whether credentials are allowed (no by default).

A preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered here, without
the key (browsers never send credentials with one) and without reading a body. Any other
request from an allowed origin gets Access-Control-Allow-Origin (and -Credentials) on its
response. It sits inside the auth middleware, as in vLLM: a 401 carries no CORS headers.
"""

from __future__ import annotations

from asgi.router import ASGIApp, Message, Receive, Scope, Send

ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
# Request headers a browser may always send (the CORS "safelisted" ones).
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})
PREFLIGHT_MAX_AGE_S = 600


class CORSMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_origins: tuple[str, ...],
        allowed_methods: tuple[str, ...],
        allowed_headers: tuple[str, ...],
        allow_credentials: bool,
    ) -> None:
        self.app = app
        self.any_origin = "*" in allowed_origins
        self.origins = frozenset(allowed_origins)
        self.methods = ALL_METHODS if "*" in allowed_methods else tuple(allowed_methods)
        self.any_header = "*" in allowed_headers
        self.headers = SAFELISTED_HEADERS | {h.lower() for h in allowed_headers}
        self.allow_credentials = allow_credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        origin = headers.get(b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._preflight(origin, headers, send)
            return
        allowed = self._origin_header(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and allowed is not None:
                extra = [(b"access-control-allow-origin", allowed.encode("latin-1"))]
                if self.allow_credentials:
                    extra.append((b"access-control-allow-credentials", b"true"))
                if allowed != "*":
                    extra.append((b"vary", b"Origin"))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _origin_header(self, origin: str) -> str | None:
        """What Access-Control-Allow-Origin says to this origin; None: it is not allowed."""
        if self.any_origin:
            # With credentials the wildcard is not honoured by browsers: name the origin.
            return origin if self.allow_credentials else "*"
        return origin if origin in self.origins else None

    async def _preflight(self, origin: str, headers: dict[bytes, str], send: Send) -> None:
        method = headers[b"access-control-request-method"].upper()
        asked = [
            h.strip().lower() for h in headers.get(b"access-control-request-headers", "").split(",")
        ]
        asked = [h for h in asked if h]
        allowed_origin = self._origin_header(origin)
        problems = []
        if allowed_origin is None:
            problems.append("origin")
        if method not in self.methods:
            problems.append("method")
        if not self.any_header and any(h not in self.headers for h in asked):
            problems.append("headers")
        response_headers = [
            (b"access-control-allow-methods", ", ".join(self.methods).encode()),
            (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()),
            (b"vary", b"Origin"),
        ]
        if allowed_origin is not None:
            response_headers.append(
                (b"access-control-allow-origin", allowed_origin.encode("latin-1"))
            )
        if self.allow_credentials:
            response_headers.append((b"access-control-allow-credentials", b"true"))
        if self.any_header and asked:
            response_headers.append(
                (b"access-control-allow-headers", ", ".join(asked).encode("latin-1"))
            )
        elif not self.any_header:
            response_headers.append(
                (b"access-control-allow-headers", ", ".join(sorted(self.headers)).encode())
            )
        if problems:
            body = f"Disallowed CORS {', '.join(problems)}".encode()
            status = 400
            response_headers.append((b"content-type", b"text/plain; charset=utf-8"))
        else:
            body, status = b"OK", 200
            response_headers.append((b"content-type", b"text/plain; charset=utf-8"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
