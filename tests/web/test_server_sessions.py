"""Sessions live server-side: signing out ends the session itself, so a cookie copied before sign-out
is refused after it, while the same user's other sessions go on; expired, forged and old-format
cookies are refused with a 401 (a page: back to /login), never a crash."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient
from itsdangerous import URLSafeTimedSerializer

from corral.state.base import utcnow
from corral.state.schema import server_sessions
from corral.web.auth import COOKIE
from tests.web.conftest import PASSWORD, Site


def _holding(site: Site, cookie: str) -> TestClient:
    """Another browser, holding `cookie` (copied, or made by hand)."""
    client = TestClient(site.client.app)
    client.cookies.set(COOKIE, cookie)
    return client


def _refused(client: TestClient, why: str) -> None:
    reply = client.get("/api/runs")
    assert reply.status_code == 401, reply.text
    assert why in reply.json()["error"] and "sign in again" in reply.json()["hint"]
    page = client.get("/runs", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login")


def test_a_cookie_copied_before_sign_out_is_refused_after_it_and_other_sessions_stay(site: Site) -> None:
    csrf = site.sign_in("alice")
    copied = _holding(site, site.client.cookies[COOKIE])
    laptop = TestClient(site.client.app)  # alice's other browser, signed in on its own
    assert laptop.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 200
    assert copied.get("/api/runs").status_code == 200
    assert site.client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    _refused(copied, "this session has ended (signed out)")
    # Nor does the copy sign out or act with the CSRF token it could have read from a page.
    assert copied.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 401
    assert laptop.get("/api/runs").status_code == 200
    assert laptop.get("/runs").status_code == 200


def test_an_expired_session_is_refused_though_its_cookie_is_still_young(site: Site) -> None:
    site.sign_in("alice")
    with site.services.state().transaction(write=True) as conn:
        conn.execute(sa.update(server_sessions), {"expires_at": utcnow() - timedelta(seconds=1)})
    _refused(site.client, "this session expired at")


def test_a_forged_or_unknown_session_id_is_refused(site: Site) -> None:
    site.sign_in("vera")
    made_up = URLSafeTimedSerializer("test-secret", salt="corral-session").dumps({"u": "vera", "s": "x" * 43})
    _refused(_holding(site, made_up), "this session is unknown to the server")
    # vera's own session id under alice's name: signed by the server, but not alice's session.
    real = URLSafeTimedSerializer("test-secret", salt="corral-session").loads(site.client.cookies[COOKIE])
    swapped = URLSafeTimedSerializer("test-secret", salt="corral-session").dumps(
        {"u": "alice", "s": real["s"]}
    )
    _refused(_holding(site, swapped), "this session is unknown to the server")
    other_key = URLSafeTimedSerializer("not-the-server", salt="corral-session").dumps(real)
    _refused(_holding(site, other_key), "not signed by this server")


def test_a_name_only_cookie_from_before_server_sessions_is_refused_clearly(site: Site) -> None:
    # What the server set before server-side sessions: the user name alone, signed with its key.
    old = _holding(site, URLSafeTimedSerializer("test-secret", salt="corral-session").dumps({"u": "alice"}))
    _refused(old, "older format")
    form = old.post(f"/runs/{site.run_id}/comment", data={"text": "hi", "csrf": "x"}, follow_redirects=False)
    assert form.status_code == 401 and "older format" in form.text and "sign in again" in form.text
    assert old.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 200
    assert old.get("/api/runs").status_code == 200


def test_a_new_password_ends_every_session_of_the_user_and_only_the_new_one_signs_in(site: Site) -> None:
    from typer.testing import CliRunner

    from corral.cli import app

    site.sign_in("alice")
    laptop = TestClient(site.client.app)
    assert laptop.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 200
    other = TestClient(site.client.app)
    assert other.post("/login", data={"name": "vera", "password": PASSWORD}).status_code == 200
    result = CliRunner().invoke(
        app,
        ["user", "password", "alice", "--password", "a new and longer one"],
        env={"CORRAL_HOME": str(site.services.settings.home)},
    )
    assert result.exit_code == 0, result.output
    assert "2 session(s) ended" in result.output
    _refused(site.client, "this session has ended (password changed)")
    _refused(laptop, "this session has ended (password changed)")
    assert other.get("/api/runs").status_code == 200  # vera's session is not alice's
    old = TestClient(site.client.app).post("/login", data={"name": "alice", "password": PASSWORD})
    assert old.status_code == 401 and "wrong user name or password" in old.text
    new = TestClient(site.client.app).post(
        "/login", data={"name": "alice", "password": "a new and longer one"}
    )
    assert new.status_code == 200
