"""corral server over real uvicorn: SSE arrives live, a disconnect ends its stream; a real browser
signs in, sees the runs and a run page, and agent-written markup shows as text and never runs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from corral import events as ev
from corral.audit.redact import process_redactor
from corral.serving import BackgroundServer
from corral.state.machine import Phase
from corral.web.app import create_app
from corral.web.window import PAGE
from tests.web.conftest import PASSWORD, Site

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def served(site: Site) -> Iterator[tuple[Site, str, BackgroundServer]]:
    server = BackgroundServer(create_app(site.services, secret="live-secret"), name="corral server (test)")
    server.start(tcp=("127.0.0.1", 0))
    try:
        yield site, f"http://127.0.0.1:{server.port}", server
    finally:
        server.stop()


def _wait(condition: object, what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _open_run(site: Site) -> str:
    state = site.services.state()
    run = state.create_run(project="shop", task="a live run", repo=str(site.repo), base_commit="0" * 40)
    for phase in (Phase.PREPARING, Phase.RUNNING):
        state.transition(run.run_id, phase)
    return run.run_id


def test_a_running_runs_new_events_arrive_over_sse_and_a_disconnect_ends_the_stream(
    served: tuple[Site, str, BackgroundServer],
) -> None:
    site, url, server = served
    # With a value registered, as in any server that has run a run, every response goes through the
    # redacting middleware: the stream's headers must still arrive before its first event.
    process_redactor().register("LIVE_TEST_TOKEN", "live-token-value+/=")
    run_id = _open_run(site)
    headers = site.token("vera")
    seen: list[str] = []
    recorder = site.services.audit().for_run(run_id)
    app_state = server.app.state  # type: ignore[attr-defined]
    try:
        with (
            httpx.Client(timeout=30) as client,
            client.stream("GET", f"{url}/api/runs/{run_id}/events", headers=headers) as stream,
        ):
            lines = stream.iter_lines()
            _wait(lambda: app_state.streams == 1, "the stream to open")
            for i in range(3):
                recorder.emit(ev.AgentStopped(turns=i, reason=f"step {i}"))
                while True:
                    line = next(lines)
                    if line.startswith("id: "):
                        seen.append(line[4:])
                        break
        # The client is gone: the server's generator must notice and end, not poll forever.
        _wait(lambda: app_state.streams == 0, "the stream of a disconnected client to end")
    finally:
        recorder.close()
    assert seen == ["1", "2", "3"]


def _need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing")


def _launch(pw: Playwright) -> Browser:
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


def _sign_in(page: Page, url: str, name: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('sign in')")
    page.wait_for_url(f"{url}/runs")


@pytest.mark.browser
def test_a_browser_signs_in_and_agent_markup_in_a_run_shows_as_text(
    served: tuple[Site, str, BackgroundServer],
) -> None:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    site, url, _server = served
    with sync_playwright() as pw:
        browser = _launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{url}/runs")
            assert page.url.endswith("/login")  # no session: only the sign-in page
            _sign_in(page, url, "alice")
            assert site.run_id in page.inner_text("#runs")
            page.screenshot(path=str(DOCS / "server-runs.png"), full_page=True)
            page.click(f"a:has-text('{site.run_id}')")
            page.wait_for_url(f"{url}/runs/{site.run_id}")
            assert "<script>window.pwned=1</script>" in page.inner_text("#summary")  # shown as text
            assert page.evaluate("window.pwned") is None  # and nothing ran
            assert page.locator("#timeline img").count() == 0 and page.locator("#diff img").count() == 0
            assert page.locator("a[href^='javascript:']").count() == 0
            assert "\\x1b" in page.inner_text("#timeline")
            assert page.locator("svg.gantt rect").count() == 2
            assert "verified" in page.inner_text("#chain")
            assert dialogs == []
        finally:
            browser.close()


@pytest.mark.browser
def test_live_rows_join_the_last_timeline_page_and_an_earlier_page_counts_them(
    served: tuple[Site, str, BackgroundServer],
) -> None:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    site, url, _server = served
    run_id = _open_run(site)
    recorder = site.services.audit().for_run(run_id)
    try:
        for i in range(PAGE + 50):
            recorder.emit(ev.AgentStopped(turns=i, reason=f"before {i}"))
        with sync_playwright() as pw:
            browser = _launch(pw)
            try:
                context = browser.new_context()  # one context: both pages share the session
                first, last = context.new_page(), context.new_page()
                _sign_in(first, url, "vera")
                first.goto(f"{url}/runs/{run_id}")
                last.goto(f"{url}/runs/{run_id}")
                last.click("#pager-top a:has-text('last page')")
                last.wait_for_selector("#pager-top:has-text('of 250')")
                assert last.locator("#pager-top a[rel=next]").count() == 0
                recorder.emit(ev.AgentStopped(turns=999, reason="<b>live</b> one"))
                row = last.wait_for_selector("#timeline tr.live")
                assert row is not None and "<b>live</b> one" in row.inner_text()  # as text
                first.wait_for_selector("#pager-top .newer:not([hidden])")
                assert first.inner_text("#pager-top .newer .count") == "1"
                assert first.locator("#timeline tr.live").count() == 0
                assert first.locator("#timeline tr").count() == PAGE + 1  # the header and a page
            finally:
                browser.close()
    finally:
        recorder.close()
