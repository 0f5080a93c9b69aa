"""The FastAPI app: pages under /, JSON under /api, one auth check for both.

Errors never show a stack trace: corral's errors become their message (and status), anything else a
plain 500. Every page is plain HTML forms; only the live timeline uses a few lines of script (SSE).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import jinja2
from fastapi import FastAPI, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from corral import events as ev
from corral.display import visible
from corral.errors import AuthError, CorralError, NotAvailable, NotFound, RunError
from corral.state.ids import RUN_ID
from corral.web import actions, redacting, views
from corral.web.auth import COOKIE, SESSION_MAX_AGE, Caller, Sessions, identify
from corral.web.chart import ChartCache
from corral.web.signin import SignInAudit, Throttle, throttled
from corral.web.verified import VerifiedCache

if TYPE_CHECKING:
    from corral.services import Services
    from corral.web.runner import Runner

TEMPLATES = Path(__file__).parent / "templates"
RunId = Annotated[str, PathParam(pattern=RUN_ID.pattern)]
PAGE = 50
SSE_POLL = 0.1


class Submit(BaseModel):
    repo: str
    task: str
    playbook: str | None = None


class RunFilter(BaseModel):
    phase: str = ""
    project: str = ""
    requester: str = ""
    since: str = ""
    until: str = ""
    page: int = Field(default=1, ge=1)


class ActionBody(BaseModel):
    text: str = ""
    override: bool = False
    """For approve: over failed checks, as `corral approve --override`."""


def _status(exc: CorralError) -> int:
    if isinstance(exc, AuthError):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, NotAvailable):
        return 501
    return 409 if isinstance(exc, RunError) else 400


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def create_app(
    services: Services,
    runner: Runner | None = None,
    secret: str | None = None,
    throttle: Throttle | None = None,
) -> FastAPI:
    signins = SignInAudit(services.audit)
    throttle = throttle or Throttle()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        signins.close()

    app = FastAPI(title="corral", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(redacting.RedactingMiddleware)
    app.state.signins = signins
    app.state.streams = 0
    """Open SSE streams: a browser that disconnects must end its stream (and the poll behind it)."""
    # Autoescape on for every template: agent text is only ever inserted escaped.
    # Each value is redacted before it is escaped (corral.web.redacting); every response is again.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, finalize=redacting.finalize
    )
    env.filters["visible"] = visible  # terminal escapes in agent text shown as `\x1b`, never raw
    templates = Jinja2Templates(env=env)

    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        response: Response = templates.TemplateResponse(request, name, context, status_code=status_code)
        return response

    sessions = Sessions(secret or secrets.token_urlsafe(32))
    verified = VerifiedCache()
    charts = ChartCache()

    def wants_html(request: Request) -> bool:
        return not request.url.path.startswith("/api")

    @app.exception_handler(CorralError)
    async def corral_error(request: Request, exc: CorralError) -> Response:
        status = _status(exc)
        if isinstance(exc, AuthError) and status == 401 and wants_html(request) and request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        body = {"error": exc.message, "hint": exc.hint or ""}
        if wants_html(request):
            return templates.TemplateResponse(
                request, "error.html", {"status": status, **body}, status_code=status
            )
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = [".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()]
        return JSONResponse({"error": "malformed request", "fields": fields}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "internal error; see the server's log"}, status_code=500)

    def caller(request: Request) -> Caller:
        client, authorization = _client(request), request.headers.get("authorization", "")
        if authorization:
            wait = throttle.locked_for(None, client)
            if wait:
                raise throttled(wait)
        try:
            who = identify(services.state(), sessions, authorization, request.cookies.get(COOKIE, ""))
        except AuthError:
            if authorization:  # a session that expired is no attempt; a wrong token may be one
                locks = throttle.failed(None, client)
                signins.emit(ev.AuthRefused(method="token", reason="bad_token", client=client))
                if locks:
                    signins.emit(ev.AuthRefused(method="token", reason="throttled", client=client))
            raise
        if who.via == "token":
            signins.token_used(who.user, who.token_hash, client)
        return who

    def csrf_checked(request: Request, who: Caller, token: str) -> None:
        if who.via == "session" and not sessions.csrf_ok(who.cookie, token):
            raise AuthError("the form's CSRF token is missing or wrong", hint="reload the page", status=403)

    # ---- sign-in -------------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        return page(request, "login.html", {"error": ""})

    @app.post("/login")
    def login(request: Request, name: Annotated[str, Form()], password: Annotated[str, Form()]) -> Response:
        from corral.state.sessions import open_session
        from corral.state.users import check_password

        client, typed = _client(request), name[:200]
        wait = throttle.locked_for(name, client)
        if wait:
            return page(request, "login.html", {"error": throttled(wait).message}, status_code=429)
        try:
            user = check_password(services.state(), name, password)
        except AuthError as exc:
            locks = throttle.failed(name, client)
            signins.emit(
                ev.AuthRefused(method="password", reason="bad_credentials", name=typed, client=client)
            )
            if locks:
                signins.emit(ev.AuthRefused(method="password", reason="throttled", name=typed, client=client))
            return page(request, "login.html", {"error": exc.message}, status_code=401)
        throttle.succeeded(name)
        _record, session_id = open_session(services.state(), user, timedelta(seconds=SESSION_MAX_AGE))
        signins.emit(ev.AuthSignedIn(actor=f"human:{user.name}", role=user.role, client=client))
        response = RedirectResponse("/runs", status_code=303)
        response.set_cookie(
            COOKIE,
            sessions.cookie_for(user, session_id),
            max_age=SESSION_MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        from corral.state.sessions import end_session

        who = caller(request)
        csrf_checked(request, who, csrf)
        if who.via == "session":
            end_session(services.state(), who.session_id, "signed_out")
        signins.emit(ev.AuthSignedOut(actor=f"human:{who.user.name}", client=_client(request)))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/")
    def root() -> Response:
        return RedirectResponse("/runs", status_code=303)

    # ---- runs ----------------------------------------------------------------------------------

    def listed(f: RunFilter) -> tuple[list[Any], bool]:
        from corral.web.listing import list_runs

        return list_runs(
            services.state(), f.phase, f.project, f.requester, f.since, f.page, PAGE, until=f.until
        )

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(request: Request, filters: Annotated[RunFilter, Query()]) -> Response:
        who = caller(request)
        rows, more = listed(filters)
        from corral.state.machine import Phase

        context = {"user": who.user, "runs": rows, "more": more, "filters": filters, "csrf": _csrf(who)}
        context["phases"] = [p.value for p in Phase]
        return page(request, "runs.html", context)

    def _csrf(who: Caller) -> str:
        return sessions.csrf_for(who.cookie) if who.via == "session" else ""

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(
        request: Request,
        run_id: RunId,
        after: Annotated[int, Query(ge=0)] = 0,
        group: Annotated[str, Query(pattern="^(|saw|decided|did|shipped|run)$")] = "",
    ) -> Response:
        who = caller(request)
        data = _run_data(run_id, after, group)
        return page(request, "run.html", {"user": who.user, "csrf": _csrf(who), **data})

    def _run_data(run_id: str, after: int, group: str) -> dict[str, Any]:
        from corral.events import parse_event
        from corral.web.window import tool_turns, window

        run = services.find_run(run_id)
        audit = services.audit()
        rows = audit.rows(run.run_id)
        report, verified_at = verified.report(audit, run.run_id, rows)
        turns = tool_turns(rows)
        shown = window(rows, after, group, issued=turns)
        # Only the kinds these need are parsed, not the whole run (see corral.web.window).
        edits = [parse_event(r.data) for r in rows if r.kind == "file.edit"]
        deploys = [parse_event(r.data) for r in rows if r.kind in ("deploy.staged", "deploy.promoted")]
        return {
            "run": run,
            "task": visible(run.task),
            "failure": visible(run.failure_reason),
            "timeline": views.shown(shown.entries),
            "window": shown,
            "verified": report,
            "verified_at": time.strftime("%H:%M:%S", time.gmtime(verified_at)),
            "diff_html": views.highlight_diff(views.branch_diff(run)),
            "turns": views.turn_diffs(edits, turns),
            "commits": views.commits(run),
            "approvals": services.state().list_approvals(run_id=run.run_id),
            "deployment_url": views.deployment_url(deploys),
            "gantt": charts.svg(run.run_id, rows),
            "last_seq": rows[-1].seq if rows else 0,
        }

    @app.post("/runs/{run_id}/{action}")
    def action_form(
        request: Request,
        run_id: RunId,
        action: Annotated[str, PathParam(pattern="^(approve|reject|comment|promote)$")],
        csrf: Annotated[str, Form()] = "",
        text: Annotated[str, Form()] = "",
        confirm: Annotated[str, Form()] = "",
        override: Annotated[str, Form()] = "",
    ) -> Response:
        who = caller(request)
        csrf_checked(request, who, csrf)
        if confirm != "yes":
            raise RunError(f"{action} needs the confirmation box ticked", hint="tick it and submit again")
        _act(who, run_id, action, text, override == "yes")
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    def _act(who: Caller, run_id: str, action: str, text: str, override: bool = False) -> dict[str, Any]:
        who.need("viewer" if action == "comment" else "approver")
        if action == "approve":
            return actions.approve(services, run_id, who.user.name, text, override)
        return actions.ACTIONS[action](services, run_id, who.user.name, text)

    # ---- API -----------------------------------------------------------------------------------

    @app.get("/api/runs")
    def api_runs(request: Request, filters: Annotated[RunFilter, Query()]) -> Response:
        caller(request)
        rows, more = listed(filters)
        runs = [r.model_dump(mode="json") for r in rows]
        return JSONResponse({"runs": runs, "page": filters.page, "more": more})

    @app.get("/api/runs/{run_id}")
    def api_run(request: Request, run_id: RunId) -> Response:
        caller(request)
        run = services.find_run(run_id)
        return JSONResponse(run.model_dump(mode="json"))

    @app.post("/api/runs")
    def api_submit(request: Request, body: Submit) -> Response:
        who = caller(request)
        who.need("approver")
        if runner is None:
            raise NotAvailable("this server does not accept runs", hint="start it with `corral server`")
        run_id = runner.submit(body.repo, body.task, body.playbook, who.user.name)
        return JSONResponse({"run_id": run_id}, status_code=201)

    @app.post("/api/runs/{run_id}/{action}")
    def api_action(
        request: Request,
        run_id: RunId,
        action: Annotated[str, PathParam(pattern="^(approve|reject|comment|promote)$")],
        body: ActionBody,
    ) -> Response:
        who = caller(request)
        if who.via == "session":
            csrf_checked(request, who, request.headers.get("x-csrf-token", ""))
        return JSONResponse(_act(who, run_id, action, body.text, body.override))

    @app.get("/api/runs/{run_id}/events")
    async def api_events(
        request: Request, run_id: RunId, after: Annotated[int, Query(ge=0)] = 0, raw: bool = False
    ) -> Response:
        caller(request)
        run = services.find_run(run_id)
        header = request.headers.get("last-event-id", "")
        start = int(header) if header.isdigit() else after
        return StreamingResponse(
            _stream(request, run.run_id, start, raw),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _stream(request: Request, run_id: str, last: int, raw: bool) -> AsyncIterator[str]:

        audit = services.audit()
        app.state.streams += 1
        try:
            async for frame in _frames(request, audit, run_id, last, raw):
                yield frame
        finally:
            app.state.streams -= 1

    async def _frames(request: Request, audit: Any, run_id: str, last: int, raw: bool) -> AsyncIterator[str]:
        """Timeline entries for the page; with `raw`, the stored (redacted) event (`corral run --server`)."""
        from corral.audit.timeline import timeline
        from corral.events import parse_event

        while not await request.is_disconnected():
            rows = await asyncio.to_thread(audit.rows, run_id, last)
            finished = False
            for row in rows:
                event = parse_event(row.data)
                if raw:
                    data = json.dumps(json.loads(row.data))
                else:
                    data = json.dumps(
                        views.shown(timeline([event], match_model=False))[0].model_dump(mode="json")
                    )
                yield f"id: {row.seq}\ndata: {data}\n\n"
                last = row.seq
                finished = finished or event.kind == "run.finished"
            if finished:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(SSE_POLL)

    return app
