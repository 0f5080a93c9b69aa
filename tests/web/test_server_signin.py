"""Sign-in, sign-out, refusals and API token use are audited on the server's chain, and repeated
failures lock a name (or an address) out without telling a guesser which names exist."""

from __future__ import annotations

from fastapi.testclient import TestClient

from corral import events as ev
from corral.web.app import create_app
from corral.web.signin import Throttle
from tests.web.conftest import PASSWORD, Site


def _chain(site: Site, client: TestClient) -> list[ev.AnyEvent]:
    return list(site.services.audit().read(client.app.state.signins.chain))  # type: ignore[attr-defined]


def _login(client: TestClient, name: str, password: str) -> tuple[int, str]:
    reply = client.post("/login", data={"name": name, "password": password}, follow_redirects=False)
    return reply.status_code, reply.text


def test_sign_in_refusal_and_sign_out_are_audited_with_who_and_from_where(site: Site) -> None:
    status, _ = _login(site.client, "alice", "wrong")
    assert status == 401
    assert _login(site.client, "mallory", "x")[0] == 401
    csrf = site.sign_in("alice")
    assert site.client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    got = [
        (e.kind, e.actor, getattr(e, "name", ""), getattr(e, "reason", "")) for e in _chain(site, site.client)
    ]
    assert got == [
        ("auth.refused", "system", "alice", "bad_credentials"),
        ("auth.refused", "system", "mallory", "bad_credentials"),
        ("auth.signed_in", "human:alice", "", ""),
        ("auth.signed_out", "human:alice", "", ""),
    ]
    signed_in = _chain(site, site.client)[2]
    assert isinstance(signed_in, ev.AuthSignedIn) and signed_in.role == "approver" and signed_in.client
    assert all("correct horse" not in e.model_dump_json() for e in _chain(site, site.client))
    # The chain verifies like a run's.
    chain = site.client.app.state.signins.chain  # type: ignore[attr-defined]
    site.client.app.state.signins.close()  # type: ignore[attr-defined]
    site.services.audit().ship_now()
    assert site.services.audit().verify(chain).ok


def test_an_api_token_is_audited_at_its_first_use_and_a_bad_one_every_time(site: Site) -> None:
    headers = site.token("vera")
    for _ in range(3):
        assert site.client.get("/api/runs", headers=headers).status_code == 200
    bad = {"Authorization": "Bearer crlu_guessed"}
    assert site.client.get("/api/runs", headers=bad).status_code == 401
    got = [(e.kind, e.actor) for e in _chain(site, site.client)]
    assert got == [("auth.token_used", "human:vera"), ("auth.refused", "system")]
    fresh = site.token("vera")  # a new token replaces the old one: its first use is audited too
    assert site.client.get("/api/runs", headers=fresh).status_code == 200
    assert [e.kind for e in _chain(site, site.client)].count("auth.token_used") == 2


def test_repeated_failures_lock_a_name_out_alike_whether_or_not_it_exists(site: Site) -> None:
    app = create_app(site.services, secret="s", throttle=Throttle(limit=3))
    with TestClient(app) as client:
        for name in ("alice", "nobody-by-this-name"):
            for _ in range(3):
                assert _login(client, name, "guess")[0] == 401
        locked = [_login(client, name, "guess") for name in ("alice", "nobody-by-this-name")]
        assert locked[0] == locked[1] and locked[0][0] == 429 and "too many failed sign-ins" in locked[0][1]
        # Locked means locked: the right password is not even checked, and no session is set.
        reply = client.post("/login", data={"name": "alice", "password": PASSWORD}, follow_redirects=False)
        assert reply.status_code == 429 and "corral_session" not in reply.cookies
        # Another user is not locked out by alice's guesser (below the address's limit).
        assert _login(client, "vera", PASSWORD)[0] == 303
        events = list(site.services.audit().read(app.state.signins.chain))
    throttled = [e.name for e in events if isinstance(e, ev.AuthRefused) and e.reason == "throttled"]
    assert throttled == ["alice", "nobody-by-this-name"]  # once per lockout, not per attempt
    assert [e.actor for e in events if e.kind == "auth.signed_in"] == ["human:vera"]


def test_an_address_that_keeps_failing_is_locked_out_of_every_name_and_of_tokens(site: Site) -> None:
    app = create_app(site.services, secret="s", throttle=Throttle(limit=2))  # the address gets 8
    with TestClient(app) as client:
        for i in range(8):
            assert _login(client, f"user{i}", "guess")[0] == 401
        assert _login(client, "vera", PASSWORD)[0] == 429
        assert client.get("/api/runs", headers=site.token("vera")).status_code == 429


def test_corral_audit_show_summarises_the_auth_events(site: Site) -> None:
    from corral.audit.timeline import timeline

    _login(site.client, "mallory", "x")
    site.sign_in("alice")
    summaries = [e.summary for e in timeline(_chain(site, site.client))]
    assert summaries == [
        "refused password as 'mallory' from testclient: bad_credentials",
        "human:alice (approver) signed in from testclient",
    ]
