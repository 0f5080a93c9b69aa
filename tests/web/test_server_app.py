"""corral server's pages and API over real stores: auth, CSRF, roles, escaping, errors, SSE, reject."""

from __future__ import annotations

import json

from corral.state.machine import Phase
from tests.web.conftest import JS_LINK, Site, _git


def test_everything_but_sign_in_is_refused_without_a_session_or_token(site: Site) -> None:
    assert site.client.get("/login").status_code == 200
    page = site.client.get("/runs", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login")
    assert site.client.get(f"/runs/{site.run_id}", follow_redirects=False).status_code == 303
    assert site.client.get("/api/runs").status_code == 401
    assert site.client.get(f"/api/runs/{site.run_id}/events").status_code == 401
    assert site.client.post("/api/runs", json={"repo": "/x", "task": "t"}).status_code == 401
    forged = {"Authorization": "Bearer crlu_not-a-real-token"}
    assert site.client.get("/api/runs", headers=forged).status_code == 401
    site.client.cookies.set("corral_session", "tampered.value.sig")
    assert site.client.get("/api/runs").status_code == 401


def test_sign_in_sets_a_signed_httponly_samesite_cookie_and_refuses_a_wrong_password(site: Site) -> None:
    wrong = site.client.post("/login", data={"name": "alice", "password": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401 and "corral_session" not in wrong.cookies
    unknown = site.client.post("/login", data={"name": "mallory", "password": "x"}, follow_redirects=False)
    assert unknown.status_code == 401
    site.sign_in("alice")
    cookie = next(h for k, h in site.client.get("/runs").request.headers.items() if k == "cookie")
    assert "corral_session=" in cookie
    reply = site.client.post("/login", data={"name": "alice", "password": "correct horse battery staple"})
    set_cookie = reply.history[0].headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "secure" not in set_cookie


def test_the_runs_list_filters_and_pages(site: Site) -> None:
    site.sign_in("vera")
    listing = site.client.get("/runs").text
    assert site.run_id in listing
    assert "\x1b" not in listing and "&lt;script&gt;" in listing and "<img src=x" not in listing
    assert site.run_id in site.client.get("/runs?phase=awaiting_approval&project=shop&requester=ann").text
    assert site.run_id not in site.client.get("/runs?phase=failed").text
    assert site.run_id not in site.client.get("/runs?requester=bob").text
    assert site.run_id not in site.client.get("/runs?since=2999-01-01").text
    today = site.services.state().get_run(site.run_id).created_at.date().isoformat()
    assert site.run_id in site.client.get(f"/runs?since={today}&until={today}").text  # the whole day
    assert site.run_id not in site.client.get("/runs?until=2000-01-01").text
    assert site.client.get("/runs?until=yesterday").status_code == 400
    assert site.client.get("/runs?phase=bogus").status_code == 400
    assert "<option selected>failed</option>" in site.client.get("/runs?phase=failed").text
    listed = site.client.get("/api/runs?project=shop").json()
    assert [r["run_id"] for r in listed["runs"]] == [site.run_id] and listed["more"] is False


def test_agent_text_on_the_run_page_is_escaped_and_links_are_never_javascript(site: Site) -> None:
    site.sign_in("vera")
    html = site.client.get(f"/runs/{site.run_id}").text
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html
    assert "\x1b" not in html and "\\x1b]52;c;aGk=" in html
    assert f'href="{JS_LINK}' not in html and "javascript:window.pwned=3" in html  # shown as text
    assert "verified, 8 events" in html  # the chain's verification status
    assert "<svg" in html and "model: m" in html and "tool: Bash" in html  # the time chart's two bars
    assert 'class="gi"' in html  # the highlighted diff against the base
    assert "fix add" in html  # the commit list


def test_unknown_run_ids_get_404_and_malformed_ones_422_without_a_trace(site: Site) -> None:
    headers = site.token("vera")
    missing = site.client.get("/api/runs/r0000000000000", headers=headers)
    assert (
        missing.status_code == 404 and "Traceback" not in missing.text and "no run" in missing.json()["error"]
    )
    for bad in ("x", "r123", "R0000000000000", "r0000000000000'--"):
        reply = site.client.get(f"/api/runs/{bad}", headers=headers)
        assert reply.status_code == 422, bad
        assert "Traceback" not in reply.text
    site.sign_in("vera")
    assert site.client.get("/runs/r0000000000000").status_code == 404


def test_a_form_without_its_csrf_token_and_a_viewers_rejection_are_refused(site: Site) -> None:
    csrf = site.sign_in("vera")
    form = {"text": "no", "confirm": "yes", "csrf": csrf}
    assert site.client.post(f"/runs/{site.run_id}/reject", data=form).status_code == 403  # a viewer
    csrf = site.sign_in("alice")
    assert site.client.post(f"/runs/{site.run_id}/reject", data={**form, "csrf": ""}).status_code == 403
    assert site.client.post(f"/runs/{site.run_id}/reject", data={**form, "csrf": "0" * 64}).status_code == 403
    as_json = site.client.post(f"/api/runs/{site.run_id}/reject", json={"text": "no"})
    assert as_json.status_code == 403  # a session's API call needs X-CSRF-Token too
    unconfirmed = site.client.post(f"/runs/{site.run_id}/reject", data={"text": "no", "csrf": csrf})
    assert unconfirmed.status_code == 409
    assert site.services.state().get_run(site.run_id).phase == Phase.AWAITING_APPROVAL


def test_an_approver_rejects_through_the_form_and_the_audit_names_them(site: Site) -> None:
    csrf = site.sign_in("alice")
    done = site.client.post(
        f"/runs/{site.run_id}/reject", data={"text": "use Decimal", "confirm": "yes", "csrf": csrf}
    )
    assert done.status_code == 200 and "alice" in done.text
    assert site.services.state().get_run(site.run_id).phase == Phase.REJECTED
    [approval] = site.services.state().list_approvals(run_id=site.run_id)
    assert (approval.actor, approval.decision, approval.comment) == ("alice", "rejected", "use Decimal")
    kinds = [(e.kind, e.actor) for e in site.services.audit().read(site.run_id)]
    assert ("approval.rejected", "human:alice") in kinds


def test_api_clients_use_bearer_tokens_and_a_viewer_token_cannot_decide(site: Site) -> None:
    viewer = site.token("vera")
    assert site.client.get(f"/api/runs/{site.run_id}", headers=viewer).json()["project"] == "shop"
    assert (
        site.client.post(f"/api/runs/{site.run_id}/reject", json={"text": "x"}, headers=viewer).status_code
        == 403
    )
    assert site.client.post(f"/api/runs/{site.run_id}/approve", json={}, headers=viewer).status_code == 403
    approver = site.token("alice")
    reply = site.client.post(f"/api/runs/{site.run_id}/reject", json={"text": "x"}, headers=approver)
    assert reply.status_code == 200 and reply.json()["phase"] == "rejected"
    again = site.client.post(f"/api/runs/{site.run_id}/reject", json={"text": "x"}, headers=approver)
    assert again.status_code == 409 and "not awaiting_approval" in again.json()["error"]


def test_promote_reaches_delivery_under_its_rules(site: Site) -> None:
    reply = site.client.post(f"/api/runs/{site.run_id}/promote", json={}, headers=site.token("alice"))
    assert reply.status_code in (400, 409) and "not staged" in reply.json()["error"]


def _frames(text: str) -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((fields.get("id", fields.get("event", "")), json.loads(fields["data"])))
    return found


def test_sse_streams_the_events_escaped_and_resumes_after_last_event_id(site: Site) -> None:
    headers = site.token("vera")
    with site.client.stream("GET", f"/api/runs/{site.run_id}/events", headers=headers) as stream:
        raw = stream.read().decode()
    frames = _frames(raw)  # the run has finished, so the stream ends after its last event
    assert [f[0] for f in frames] == ["1", "2", "3", "4", "5", "6", "7", "8", "end"]
    assert all("\x1b" not in json.dumps(f[1], ensure_ascii=False) for f in frames)
    resumed_headers = {**headers, "Last-Event-ID": "4"}
    with site.client.stream("GET", f"/api/runs/{site.run_id}/events", headers=resumed_headers) as stream:
        resumed = _frames(stream.read().decode())
    assert [f[0] for f in resumed] == ["5", "6", "7", "8", "end"]


def test_approving_over_failed_checks_needs_the_override_box_and_the_chain_shows_it(site: Site) -> None:
    head = _git(site.repo, "rev-parse", "corral/branch")
    site.services.state().update_run(site.run_id, checks_passed=False, meta={"head_commit": head})
    csrf = site.sign_in("alice")
    page = site.client.get(f"/runs/{site.run_id}").text
    assert 'name="override"' in page  # offered only because the checks failed
    form = {"text": "ok", "confirm": "yes", "csrf": csrf}
    refused = site.client.post(f"/runs/{site.run_id}/approve", data=form)
    assert refused.status_code == 409 and "checks failed" in refused.text
    assert site.services.state().get_run(site.run_id).phase == Phase.AWAITING_APPROVAL
    done = site.client.post(f"/runs/{site.run_id}/approve", data={**form, "override": "yes"})
    assert done.status_code == 200, done.text
    [approval] = site.services.state().list_approvals(run_id=site.run_id)
    assert (approval.actor, approval.override, approval.head_sha) == ("alice", True, head)
    assert "override: checks failed" in done.text and head[:12] in done.text
    granted = [e for e in site.services.audit().read(site.run_id) if e.kind == "approval.granted"]
    assert [(e.actor, getattr(e, "override", None)) for e in granted] == [("human:alice", True)]


def test_the_run_page_and_the_list_name_the_host_that_ran_the_run(site: Site) -> None:
    site.sign_in("vera")
    page = site.client.get(f"/runs/{site.run_id}").text
    assert '<td id="host">in-process</td>' in page  # run by corral itself, no fleet
    state = site.services.state()
    record = state.get_run(site.run_id)
    state.update_run(site.run_id, meta={**record.meta, "host": "sandbox-<b>7</b>\x1b[2J", "attempt": 2})
    page = site.client.get(f"/runs/{site.run_id}").text
    assert '<td id="host">sandbox-&lt;b&gt;7&lt;/b&gt;\\x1b[2J (attempt 2)</td>' in page
    listing = site.client.get("/runs").text
    assert "<td>sandbox-&lt;b&gt;7&lt;/b&gt;\\x1b[2J</td>" in listing
