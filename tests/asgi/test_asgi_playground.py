"""The browser playground's files through the whole app: served at / without the key (every
API call the page makes carries it), under a Content-Security-Policy that forbids inline code,
with every form control labelled; and gone with playground off."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import anyio
import pytest
from asgi_fakes import Collector, http_scope

from asgi.app import build_app
from configs.settings import Settings
from protocol.server_state import ServerState

pytestmark = pytest.mark.anyio


async def get(settings: Settings, path: str) -> tuple[int, dict[str, str], bytes]:
    app = build_app(settings)
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def client() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await anyio.sleep_forever()  # stays connected (the router watches for a disconnect)

    sent = Collector()
    await app(http_scope(path, "GET", state={"server": ServerState(settings)}), client, sent)
    headers = {k.decode(): v.decode() for k, v in sent.start["headers"]}
    return sent.start["status"], headers, b"".join(m.get("body", b"") for m in sent.messages[1:])


class PageParts(HTMLParser):
    """What a strict CSP cares about, and the labels."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.inline_script = False
        self.inline_handlers: list[str] = []
        self.style_attributes = 0
        self.style_elements = 0
        self.controls: list[dict[str, Any]] = []
        self.label_for: set[str] = set()
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.inline_handlers += [name for name in a if name.startswith("on")]
        self.style_attributes += "style" in a
        if tag == "script":
            if a.get("src"):
                self.assets.append(a["src"])
            self._open.append("script")
        elif tag == "link" and a.get("rel") == "stylesheet":
            self.assets.append(a["href"])
        elif tag == "style":
            self.style_elements += 1
        elif tag == "label":
            if a.get("for"):
                self.label_for.add(a["for"])
            self._open.append("label")
        elif tag in ("input", "select", "textarea"):
            self.controls.append({**a, "in_label": "label" in self._open})

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            self._open.remove(tag)

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] == "script" and data.strip():
            self.inline_script = True


async def test_the_page_and_its_assets_load_without_the_key_under_a_strict_policy() -> None:
    settings = Settings(api_key="secret")
    status, headers, body = await get(settings, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["x-content-type-options"] == "nosniff"

    page = PageParts()
    page.feed(body.decode())
    assert not page.inline_script and not page.inline_handlers
    assert page.style_attributes == 0 and page.style_elements == 0
    assert sorted(page.assets) == [
        "/playground/markdown.js",
        "/playground/playground.css",
        "/playground/playground.js",
    ]
    for asset in page.assets:
        status, headers, body = await get(settings, asset)
        assert status == 200, asset
        kind = "text/css" if asset.endswith(".css") else "text/javascript"
        assert headers["content-type"] == f"{kind}; charset=utf-8"
        assert body
    # The API itself still wants the key.
    status, _, _ = await get(settings, "/v1/models")
    assert status == 401


async def test_every_form_control_has_a_label() -> None:
    _, _, body = await get(Settings(), "/")
    page = PageParts()
    page.feed(body.decode())
    assert len(page.controls) >= 10
    for control in page.controls:
        assert control["in_label"] or control.get("id") in page.label_for, control


async def test_playground_off_answers_404() -> None:
    settings = Settings(playground=False)
    for path in ("/", "/playground/playground.js"):
        status, _, body = await get(settings, path)
        assert status == 404, path
        assert b'"error"' in body
