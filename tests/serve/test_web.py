"""The web chat page in a real headless browser (Debian's Chromium driven by Playwright): the model's name, a
streamed greedy reply equal to llmlab's own generation, a second turn that sends the whole conversation, and
the stop button ending a long reply (its KV blocks back in the pool at once)."""

import json
import shutil

import httpx
import pytest

from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.text import stream_text
from tests.serve.conftest import metric, wait_for_metric

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_static_page_loads_nothing_from_elsewhere(serve):
    url, _ = serve(max_batch=2, kv_blocks=20, block_size=8)
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 200 and '<script src="/static/chat.js">' in page.text
    for path in ("/", "/static/chat.js", "/static/chat.css"):
        assert "://" not in httpx.get(url + path, timeout=10).text  # no CDN: works offline


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium at /usr/bin/chromium")
def test_browser_chats_streams_and_stops(serve, lm):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = serve(api_key="sekrit", max_batch=2, kv_blocks=40, block_size=8, step_delay=0.05)
    stops = end_of_turn_ids(lm.tokenizer)
    requests, bodies = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.on("request", lambda r: requests.append(r.url))
            page.on("request", lambda r: bodies.append(json.loads(r.post_data)) if r.method == "POST" else None)
            page.goto(url + "/")
            page.wait_for_selector("#key-label:not([hidden])")  # the server needs a key: the page asks for it
            page.fill("#api-key", "sekrit")
            page.dispatch_event("#api-key", "change")
            # the name and no error: the keyed load is done (the keyless one shows the name from /health too)
            page.wait_for_function("document.getElementById('model').textContent === 'tiny-chat' && "
                                   "document.getElementById('status').textContent === ''")

            page.fill("#temperature", "0")
            page.fill("#max-tokens", "12")
            page.fill("#input", "Hello")
            page.press("#input", "Enter")
            page.wait_for_selector("body[data-state='streaming']")
            page.wait_for_selector("body[data-state='idle'][data-turns='2']")
            first = [{"role": "user", "content": "Hello"}]
            expected = "".join(stream_text(lm.generate(lm.chat_ids(first), 12, temperature=0, stop_ids=stops),
                                           lm.tokenizer))
            reply = page.evaluate("document.querySelector('.msg.assistant').firstChild.textContent")
            assert reply == expected

            page.fill("#max-tokens", "50")  # the second turn's prompt is 71 tokens of the 128-token window
            page.fill("#input", "and more")
            page.press("#input", "Enter")
            page.wait_for_function("document.querySelectorAll('.msg.assistant')[1].textContent.length > 3")
            assert page.is_enabled("#stop") and page.is_disabled("#send")
            assert metric(url, "llmlab_kv_blocks_used") > 0
            page.click("#stop")
            page.wait_for_selector("body[data-finish='stopped'][data-state='idle']")
            assert "[stopped]" in page.inner_text(".msg.assistant >> nth=1")
            assert wait_for_metric(url, "llmlab_kv_blocks_used", 0, timeout=3) == 0  # the abort freed them
            assert metric(url, "llmlab_num_requests_running") == 0
        finally:
            browser.close()
    second = bodies[-1]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]  # multi-turn
    assert second["stream"] is True and second["temperature"] == 0 and second["max_tokens"] == 50
    assert all(u.startswith(url) for u in requests)  # nothing loaded from elsewhere
