"""GET / and the playground's assets: files read once from static/, served as they are.

Public (the page must load before the visitor has typed the key; every API call it makes
carries the key) and not part of the API document. A strict Content-Security-Policy rides on
every file: scripts and styles only from this server, calls only to it, no inline code.
"""

from __future__ import annotations

from pathlib import Path

from protocol.http import Request, Response
from protocol.route import Route

STATIC = Path(__file__).parent / "static"
ASSETS_PREFIX = "/playground/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _file_route(path: str, file: Path) -> Route:
    body = file.read_bytes()
    headers = [
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-cache"),  # revalidate: a new version shows on reload
    ]

    async def serve(request: Request) -> Response:
        return Response(200, body, MEDIA_TYPES[file.suffix], list(headers))

    return Route("GET", path, serve, f"Playground: {file.name}", "playground", public=True)


def playground_routes() -> list[Route]:
    """GET / (the page) and GET /playground/<file> for each asset beside it."""
    routes = [_file_route("/", STATIC / "index.html")]
    for file in sorted(STATIC.iterdir()):
        if file.suffix in MEDIA_TYPES and file.name != "index.html":
            routes.append(_file_route(ASSETS_PREFIX + file.name, file))
    return routes
