"""The playground driven in a real browser: headless Chromium (Debian's `chromium`, which
`./install.sh test` installs where apt-get is at hand) through Playwright, against the server
with an API key. Skipped where either cannot be had.

With LUMEN_PLAYGROUND_SCREENSHOTS=DIR set, a screenshot of each tab is written there (the ones
in docs/ come from `LUMEN_PLAYGROUND_SCREENSHOTS=docs python -m pytest -q
tests/e2e/test_e2e_playground_browser.py`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

KEY = "token-abc123"  # auth_server's
CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
RANK_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
        except sync_api.Error as exc:  # a Chromium Playwright cannot drive
            pytest.skip(f"Chromium does not start under Playwright: {exc}")
        yield browser
        browser.close()


@pytest.fixture
def page(browser, auth_server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.problems = []  # console errors (CSP violations among them) and page errors
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.api_requests = []
    page.on("request", lambda r: r.resource_type == "fetch" and page.api_requests.append(r))
    page.goto(auth_server.url + "/")
    yield page
    context.close()


def _screenshot(page, name: str) -> None:
    folder = os.environ.get("LUMEN_PLAYGROUND_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"playground-{name}.png"), full_page=False)


def _running_requests(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.findall(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return sum(map(float, found))


def _enter_key(page) -> None:
    # Without the key the page loads, but listing the models is refused.
    sync_api.expect(page.locator("#notice")).to_contain_text("API key")
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    sync_api.expect(page.locator("#model option", has_text=CHAT_MODEL)).to_have_count(1)
    sync_api.expect(page.locator("#notice")).to_be_hidden()


def _send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def _ask(page, text: str, max_tokens: int):
    """Send `text` greedily with this max_tokens; the reply's message."""
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(max_tokens))
    _send(page, text)
    return page.locator(".message.assistant").last


def test_chat_streams_a_reply_and_every_call_carries_the_key(page, auth_server):
    _enter_key(page)
    reply = _ask(page, "Name three colours.", 40)
    sync_api.expect(reply.locator(".stats")).to_contain_text("tokens/s", timeout=120_000)
    sync_api.expect(reply.locator(".stats")).to_contain_text("first token after")
    assert reply.locator(".content").inner_text().strip()
    # Kept in the browser: a reload shows the conversation again.
    page.reload()
    sync_api.expect(page.locator(".message.user")).to_contain_text("Name three colours.")
    _screenshot(page, "chat")
    # Editing a message replaces it and everything after it.
    page.click(".message.user button:has-text('Edit')")
    sync_api.expect(page.locator("label[for=prompt]")).to_contain_text("Edit message")
    assert page.input_value("#prompt") == "Name three colours."
    _send(page, "Name two animals.")
    sync_api.expect(page.locator(".message.user")).to_have_count(1)
    sync_api.expect(page.locator(".message.user")).to_contain_text("Name two animals.")
    sync_api.expect(page.locator(".message.assistant .stats")).to_contain_text(
        "tokens/s", timeout=120_000
    )
    sync_api.expect(page.locator(".message.assistant")).to_have_count(1)

    calls = [r for r in page.api_requests if "/v1/" in r.url]
    assert calls and all(r.headers.get("authorization") == f"Bearer {KEY}" for r in calls[1:])
    assert not any(KEY in r.url for r in page.api_requests)
    # No CSP violation or script error; only the browser's note of the keyless 401.
    assert all("401" in p for p in page.problems), page.problems


def test_stop_aborts_the_request_on_the_server(page, auth_server):
    _enter_key(page)
    reply = _ask(page, "Count from 1 to 1000, one number per line.", 1500)
    sync_api.expect(reply.locator(".content")).to_contain_text("5", timeout=120_000)
    assert _running_requests(auth_server.url) >= 1
    page.click("#stop")
    sync_api.expect(reply.locator(".stats")).to_contain_text("stopped")
    deadline = time.monotonic() + 15
    while _running_requests(auth_server.url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running_requests(auth_server.url) == 0
    # Regenerate replaces the stopped reply.
    page.fill("#max-tokens", "8")
    page.click(".message.assistant button:has-text('Regenerate')")
    sync_api.expect(page.locator(".message.assistant")).to_have_count(1)
    sync_api.expect(reply.locator(".stats")).to_contain_text("tokens", timeout=120_000)


def test_rank_and_server_tabs(page, auth_server):
    _enter_key(page)
    page.click("#tab-rank")
    page.select_option("#rank-model", RANK_MODEL)
    page.click("#rank")
    rows = page.locator("#rank-results tbody tr")
    sync_api.expect(rows).to_have_count(4, timeout=60_000)
    sync_api.expect(rows.first).to_contain_text("Paris is the capital")
    _screenshot(page, "rank")
    page.check("input[value='/score']")
    page.fill("#documents", "Bananas are yellow.\nParis is the capital of France.")
    page.click("#rank")
    sync_api.expect(rows).to_have_count(2)
    sync_api.expect(rows.first).to_contain_text("Paris is the capital")

    page.click("#tab-server")
    sync_api.expect(page.locator("#panel-chat")).to_be_hidden()
    sync_api.expect(page.locator("#panel-rank")).to_be_hidden()
    sync_api.expect(page.locator("#model-table")).to_contain_text(CHAT_MODEL)
    sync_api.expect(page.locator("#load")).to_contain_text("server_load")
    sync_api.expect(page.locator("#figure-running")).to_have_text(re.compile(r"^\d+$"))
    sync_api.expect(page.locator("#figure-kv")).to_have_text(re.compile(r"%$"))
    _screenshot(page, "server")
    # Keyboard: arrows move between tabs.
    page.focus("#tab-server")
    page.keyboard.press("ArrowRight")
    sync_api.expect(page.locator("#panel-chat")).to_be_visible()


def test_narrow_screen_has_no_sideways_scroll(page):
    page.set_viewport_size({"width": 380, "height": 800})
    _enter_key(page)
    for tab in ("chat", "rank", "server"):
        page.click(f"#tab-{tab}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 380, tab


def test_structured_output_and_streamed_tool_calls(page):
    _enter_key(page)
    page.click("summary:has-text('Structured output')")
    schema = '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}'
    page.fill("#schema", schema)
    reply = _ask(page, "Which city is the capital of France? Answer in JSON.", 60)
    sync_api.expect(reply.locator(".stats")).to_contain_text("tokens", timeout=120_000)
    answer = json.loads(reply.locator(".content").inner_text())
    assert isinstance(answer["city"], str)

    page.fill("#schema", "")
    page.click("summary:has-text('Tools')")
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": parameters}}]
    page.fill("#tools", json.dumps(tools))
    page.select_option("#tool-choice", "required")
    _send(page, "What is the weather in Paris?")
    reply = page.locator(".message.assistant").last
    sync_api.expect(reply.locator(".stats")).to_contain_text("tokens", timeout=120_000)
    sync_api.expect(reply.locator(".tools-called")).to_contain_text("get_weather(")
    # Tool definitions that are not JSON are refused in the page, before any request.
    page.fill("#tools", "[{")
    _send(page, "Again?")
    sync_api.expect(page.locator("#notice")).to_contain_text("not valid JSON")
