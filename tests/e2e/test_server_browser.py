"""The browser follows a real run: submitted through the API to a server that runs it in the real
sandbox with a playbook, its events arrive live on the open page, its diff and time chart show, and
another user approves it in the page: it is merged and its preview is served."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from corral.demo import DEMO_FILES, DEMO_TASK, demo_playbook_path
from corral.services import Services
from corral.serving import BackgroundServer
from corral.settings import load_settings
from corral.state.users import add_user, new_token
from corral.web.app import create_app
from corral.web.runner import Runner
from tests.e2e.conftest import git, make_repo
from tests.e2e.test_delivery import CONFIG
from tests.web.test_server_live import CHROMIUM

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.docker, pytest.mark.browser]
PASSWORD = "pw-for-the-browser"


@pytest.fixture
def server() -> Iterator[tuple[Services, str]]:
    services = Services(load_settings())
    add_user(services.state(), "alice", "approver", PASSWORD)
    add_user(services.state(), "bob", "approver", PASSWORD)
    handle = BackgroundServer(
        create_app(services, Runner(services), "e2e-secret"), name="corral server (e2e)"
    )
    handle.start(tcp=("127.0.0.1", 0))
    try:
        yield services, f"http://127.0.0.1:{handle.port}"
    finally:
        handle.stop()
        services.close()


def sign_in(page: Page, url: str, name: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('sign in')")
    page.wait_for_url(f"{url}/runs")


def test_a_browser_watches_a_real_run_arrive_live_then_sees_its_diff_and_chart(
    agent_image: str, tmp_path: Path, server: tuple[Services, str]
) -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    services, url = server
    repo = make_repo(tmp_path / "demo", DEMO_FILES, CONFIG)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*args, "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            sign_in(page, url, "bob")
            headers = {"Authorization": f"Bearer {new_token(services.state(), 'alice')}"}  # alice asks
            body = {"repo": str(repo), "task": DEMO_TASK, "playbook": str(demo_playbook_path())}
            accepted = httpx.post(f"{url}/api/runs", json=body, headers=headers, timeout=120)
            assert accepted.status_code == 201, accepted.text
            run_id = accepted.json()["run_id"]
            page.goto(f"{url}/runs/{run_id}")
            # Events audited after the page was served arrive over SSE and are appended as rows.
            page.wait_for_selector("#timeline tr.live", timeout=120_000)
            page.wait_for_function(
                "document.querySelector('#timeline').innerText.includes('run.finished')", timeout=240_000
            )
            assert services.state().get_run(run_id).phase == "awaiting_approval"
            page.reload()
            assert "return a + b" in page.inner_text("#diff")
            assert page.locator("svg.gantt rect").count() >= 4  # model requests and tool calls
            assert "verified" in page.inner_text("#chain")
            # alice asked for the run, so bob approves it: confirm, approve, and the page shows it shipped.
            page.check("#form-approve input[name=confirm]")
            page.click("#form-approve button")
            page.wait_for_url(f"{url}/runs/{run_id}")
            assert page.inner_text("#phase") == "staged"
            assert "bob" in page.inner_text("#approvals")
            assert "return a + b" in git(repo, "show", "main:calc/ops.py")
            preview = page.get_attribute("#deployment a", "href")
            assert preview and preview.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(preview + "index.html", timeout=10) as served:
                assert served.status == 200 and "add(2, 3) = 5" in served.read().decode()
            page.screenshot(path=str(Path(__file__).resolve().parents[2] / "docs" / "server-run.png"))
        finally:
            browser.close()
