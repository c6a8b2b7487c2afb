"""Bearer API-key check. Deny by default: every route not marked public needs the key.

Several keys may be given separated by commas, so a key can be rotated without downtime: the
new one is added, clients move over, the old one is removed.
"""

from __future__ import annotations

import hashlib
import hmac

from asgi.router import ASGIApp, Receive, Scope, Send, route_path
from configs.settings import split_api_keys
from protocol.http import error_body

_UNAUTHORIZED_BODY = error_body(
    401,
    "Invalid or missing API key. Send it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
    "AuthenticationError",
)
_UNAUTHORIZED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_UNAUTHORIZED_BODY)).encode()),
    (b"www-authenticate", b"Bearer"),
]


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        public_paths: frozenset[str],
    ) -> None:
        """public_paths: the routes open without the key (the route table's `public`)."""
        self.app = app
        self.public_paths = public_paths
        # Digests have a fixed length, so compare_digest leaks neither the key nor its length.
        keys = split_api_keys(api_key or None)
        self.key_digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key_digests:
            # Public routes answer anyone, but may tell a client with the key more.
            scope["authorized"] = self._authorized(scope)
        if (
            scope["type"] != "http"
            or not self.key_digests
            or scope["method"] == "OPTIONS"  # CORS preflights never carry credentials
            or route_path(scope["path"]) in self.public_paths
            or scope["authorized"]
        ):
            await self.app(scope, receive, send)
            return
        headers = list(_UNAUTHORIZED_HEADERS)  # a fresh list: outer layers may edit it
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED_BODY, "more_body": False})

    def _authorized(self, scope: Scope) -> bool:
        """A known key as `Authorization: Bearer <key>` or as `x-api-key: <key>` (what the
        anthropic SDK sends)."""
        for name, value in scope.get("headers", ()):
            name = name.lower()
            if name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and self._known(token.strip()):
                    return True
            elif name == b"x-api-key" and self._known(value.strip()):
                return True
        return False

    def _known(self, token: bytes) -> bool:
        # Raw header bytes: a non-ASCII key arrives as its UTF-8 bytes, as encoded here.
        digest = hashlib.sha256(token).digest()
        # Every key is compared, so the time taken does not tell which one matched.
        return any([hmac.compare_digest(digest, key) for key in self.key_digests])
