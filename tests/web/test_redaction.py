"""The dashboard's exit (issue 14, item 3): pages, the JSON API and the SSE timeline show no value this
process has resolved, in any form, whoever stored the data. The data here was written by a process
that did not know the value (the recorder had nothing registered), and the value holds `<`: once a
page escapes it to `&lt;`, no form of it matches, so pages redact each value before escaping it."""

from __future__ import annotations

import base64
import html
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from corral import events as ev
from corral.audit.redact import process_redactor
from corral.services import Services
from corral.settings import load_settings
from corral.state.machine import Phase
from corral.state.users import add_user, new_token
from corral.web.app import create_app

SECRET = "d4sh<<>???~~~ /+z"  # base64 at each alignment holds '+', '/' and '='
RAW = SECRET.encode()
FORMS = [
    SECRET,
    html.escape(SECRET),
    base64.b64encode(RAW).decode(),
    base64.urlsafe_b64encode(RAW).decode(),
    quote(SECRET, safe=""),
    RAW.hex(),
]
SHOWN = " | ".join(
    [SECRET, base64.b64encode(RAW).decode(), base64.b64encode(b"xy" + RAW).decode(), quote(SECRET), RAW.hex()]
)
"""What the agent printed: the value raw, as base64 at two alignments, URL-encoded and as hex."""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[TestClient, str, dict[str, str]]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    base = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    _git(repo, "checkout", "-q", "-b", "corral/leak")
    (repo / "app.py").write_text(f"TOKEN = {SECRET!r}\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", f"use {SECRET}")
    _git(repo, "checkout", "-q", "main")

    services = Services(load_settings())
    state = services.state()
    state.ensure_project("shop", repo=str(repo))
    run = state.create_run(
        project="shop", task=f"deploy with {SECRET}", repo=str(repo), base_commit=base.stdout.strip()
    )
    for phase in (Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL):
        state.transition(run.run_id, phase)
    recorder = services.audit().for_run(run.run_id)
    try:
        call = {"gen_ai.tool.call.id": "t1"}
        recorder.emit(ev.ShellCommand.model_validate({**call, "command": "printenv", "output": SHOWN}))
        recorder.emit(
            ev.ModelResponse.model_validate({"gen_ai.request.model": "m", "exchange_id": "x", "text": SHOWN})
        )
        recorder.emit(
            ev.FileEdit.model_validate({**call, "path": "app.py", "diff": f"+TOKEN = {SECRET!r}\n"})
        )
        recorder.emit(ev.RunFinished(phase="awaiting_approval", reason="", duration_ms=1))
    finally:
        recorder.close()
    state.update_run(run.run_id, branch="corral/leak")
    add_user(state, "vera", "viewer", "pw-for-vera-1")
    headers = {"Authorization": f"Bearer {new_token(state, 'vera')}"}
    stored = services.audit().rows(run.run_id)
    assert any(SECRET in row.data for row in stored)  # the store holds it: only the exit can redact
    process_redactor().register("WEB_TOKEN", SECRET)  # as a run in this server process would
    with TestClient(create_app(services, secret="test-secret")) as client:
        yield client, run.run_id, headers
    services.close()


def _clean(text: str) -> None:
    for form in FORMS:
        assert form not in text, form
    assert "[secret:WEB_TOKEN]" in text


def test_the_run_page_shows_no_form_of_the_value(site: tuple[TestClient, str, dict[str, str]]) -> None:
    client, run_id, headers = site
    page = client.get(f"/runs/{run_id}", headers=headers)
    assert page.status_code == 200
    _clean(page.text)
    assert int(page.headers["content-length"]) == len(page.content)


def test_the_json_api_shows_no_form_of_the_value(site: tuple[TestClient, str, dict[str, str]]) -> None:
    client, run_id, headers = site
    one = client.get(f"/api/runs/{run_id}", headers=headers)
    assert one.status_code == 200 and one.json()["task"] == "deploy with [secret:WEB_TOKEN]"
    _clean(client.get("/api/runs", headers=headers).text)


@pytest.mark.parametrize("raw", [False, True])
def test_the_sse_timeline_shows_no_form_of_the_value(
    site: tuple[TestClient, str, dict[str, str]], raw: bool
) -> None:
    client, run_id, headers = site
    reply = client.get(f"/api/runs/{run_id}/events", params={"raw": raw}, headers=headers)
    assert reply.status_code == 200 and "event: end" in reply.text
    _clean(reply.text)
