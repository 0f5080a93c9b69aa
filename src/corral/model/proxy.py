"""The host-side model proxy: the only way a sandbox reaches a model.

The sandbox holds a per-run placeholder token, never a key. The proxy checks that token, refuses any
model but the run's pinned model and small model, swaps the placeholder for the real key, forwards to
the upstream (the Anthropic API, any compatible endpoint, or the in-process scripted model), streams
the answer back unbuffered, and records every exchange as typed events.

It is served on the run's `model.sock` (a unix socket bind-mounted into the sandbox), or on a
127.0.0.1 port for `--listen` and tests, in a background thread (corral/serving.py).

What goes upstream is filtered (model/request_filter.py): the request could otherwise make the
upstream fetch URLs or run server tools with our key. What the proxy holds from the sandbox is bounded:
a body is read incrementally up to `max_body_bytes`, one body at a time is held and parsed, and the
forwarded copy is released once it has been sent.

A failing upstream (429, 529, 5xx, a stalled stream) is not retried here: Claude Code retries it, and
the proxy bounds the attempts and records each one (model/upstream_failures.py).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.audit import EventSink
from corral.audit.redact import process_redactor
from corral.errors import ModelError
from corral.events import ModelRefused, ModelRequest, ModelResponse
from corral.model import request_filter
from corral.model.budget import Budget
from corral.model.playbook import Playbook
from corral.model.scripted import anthropic_http_error, error_body, scripted_app
from corral.model.sse import Reassembled, Reassembler, SseParser
from corral.model.upstream_failures import (
    DEFAULT_MODEL_RETRIES,
    DEFAULT_STREAM_IDLE_SECONDS,
    RETRYABLE_STATUSES,
    Failure,
    UpstreamFailures,
    clamp_retry_header,
)
from corral.serving import BackgroundServer

DEFAULT_BASE_URL = "https://api.anthropic.com"
SCRIPTED_BASE_URL = "http://scripted.corral.invalid"
_FORWARD_REQUEST_HEADERS = ("anthropic-version", "accept")
_FORWARD_RESPONSE_PREFIXES = ("anthropic-", "request-id", "x-request-id", "retry-after", "x-should-retry")
_SUMMARY_CHARS = 400
MAX_BODY_BYTES = 32 * 1024 * 1024
"""The Anthropic API's own request size limit: nothing it would accept is refused here."""
MAX_CONNECTIONS = 64
"""Concurrent connections (idle keep-alive ones included) to one run's proxy; past it, a 503."""


@dataclass(frozen=True)
class Upstream:
    """Where the proxy forwards to. `api_key` is the real key; it never leaves the host."""

    base_url: str
    api_key: str | None = None
    transport: httpx.AsyncBaseTransport | None = None
    name: str = "anthropic"

    @classmethod
    def anthropic(cls, api_key: str, base_url: str | None = None) -> Upstream:
        return cls(base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"), api_key=api_key)

    @classmethod
    def scripted(cls, playbook: Playbook, workspace: str) -> Upstream:
        """The in-process scripted model; no network, no key."""
        transport = httpx.ASGITransport(app=scripted_app(playbook, workspace))
        return cls(base_url=SCRIPTED_BASE_URL, transport=transport, name=f"scripted:{playbook.source}")

    @classmethod
    def select(cls, env: Mapping[str, str], *, playbook: Playbook | None, workspace: str) -> Upstream:
        """The upstream issue 2 specifies: the scripted model with a playbook or without a key, else
        ANTHROPIC_BASE_URL (or api.anthropic.com) with ANTHROPIC_API_KEY. `env` is the host env."""
        if playbook is not None:
            return cls.scripted(playbook, workspace)
        key = env.get("ANTHROPIC_API_KEY")
        if not key:
            raise ModelError(
                "no model upstream: ANTHROPIC_API_KEY is not set and no playbook was given",
                hint="export ANTHROPIC_API_KEY on the host, or pass --playbook FILE for a scripted run",
            )
        return cls.anthropic(key, env.get("ANTHROPIC_BASE_URL") or None)


_SYSTEM_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)


def _summarise_user_turn(messages: Any) -> str:
    """A short account of the newest user message: the prompt text or the tool results it carries.

    Claude Code's `<system-reminder>` blocks (environment, context notes) are left out: they are the
    same on every turn and would bury what the agent actually saw.
    """
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return _clip(_SYSTEM_REMINDER.sub("", content).strip())
        parts: list[str] = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(_SYSTEM_REMINDER.sub("", str(block.get("text", ""))))
            elif block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, list):
                    inner = " ".join(str(b.get("text", "")) for b in inner if isinstance(b, dict))
                flag = " error" if block.get("is_error") else ""
                parts.append(f"[tool_result{flag} {block.get('tool_use_id', '')}] {inner or ''}")
        return _clip(" | ".join(p.strip() for p in parts if p.strip()))
    return ""


def _clip(text: str) -> str:
    """Redacted before it is cut: a cut through a secret would leave a piece that no form matches."""
    return process_redactor().redact_text(text)[:_SUMMARY_CHARS]


RUN_TOKEN_PREFIX = "corral-run-"
"""How a run's placeholder token starts (`corral.runs` mints them): the only 'key' a sandbox holds."""


def _token_of(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(error_type, message), status_code=status)


class ModelProxy:
    """One run's model endpoint. Build it, `serve_unix` or `serve_tcp`, and `stop` it in a finally."""

    def __init__(
        self,
        run_token: str,
        pinned_models: Iterable[str],
        upstream: Upstream,
        sink: EventSink,
        *,
        timeout: float = 600.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        budget: Budget | None = None,
        retries: int = DEFAULT_MODEL_RETRIES,
        stream_idle_seconds: float = DEFAULT_STREAM_IDLE_SECONDS,
    ) -> None:
        if not run_token:
            raise ModelError("the model proxy needs a run token", hint="generate one per run")
        self._token = run_token
        self.pinned_models = frozenset(pinned_models)
        if not self.pinned_models:
            raise ModelError("the model proxy needs at least one pinned model", hint="set [agent] model")
        self.upstream = upstream
        self._sink = sink
        self._timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.budget = budget or Budget()
        self.failures = UpstreamFailures(upstream.name, retries)
        self.stream_idle_seconds = stream_idle_seconds
        self._client: httpx.AsyncClient | None = None
        # One request body at a time is read, parsed and handed upstream: what the proxy holds from
        # the sandbox stays near one capped body, however many requests arrive at once.
        self._buffering = anyio.Semaphore(1)
        self.exchanges = 0
        """Generation requests forwarded upstream (refused and unauthenticated ones do not count)."""
        if upstream.api_key:
            # Redact the real key from every event, should an upstream ever echo it back.
            sink.register_secret("ANTHROPIC_API_KEY", upstream.api_key)
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/", self._health, methods=["GET"]),
            ],
            lifespan=self._lifespan,
            exception_handlers={HTTPException: anthropic_http_error},
        )
        self._server = BackgroundServer(self.app, name="model proxy", limit_concurrency=MAX_CONNECTIONS)

    # ---- HTTP ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    def _http(self) -> httpx.AsyncClient:
        # Created lazily inside the serving event loop: an AsyncClient is bound to the loop it runs on.
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.upstream.transport,
                timeout=httpx.Timeout(self._timeout, connect=15.0),
                follow_redirects=False,
            )
        return self._client

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "upstream": self.upstream.name, "exchanges": self.exchanges})

    def _refuse(self, status: int, error_type: str, message: str, model: object = "") -> JSONResponse:
        self._sink.emit(ModelRefused(request_model=str(model or ""), reason=message))
        return _error(status, error_type, message)

    async def _read_body(self, request: Request) -> bytearray | None:
        """The body, or None as soon as it passes the cap: read chunk by chunk, so that no more than
        the cap is ever held, whatever the sandbox sends or declares."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        body = bytearray()
        async for chunk in request.stream():
            if len(body) + len(chunk) > self.max_body_bytes:
                return None
            body += chunk
        return body

    async def _admit(self, request: Request) -> tuple[dict[str, Any], bytes | Response]:
        """Authenticate, read, parse, pin-check and filter a request. Returns the body and the bytes
        to forward, or the refusal to send."""
        token = _token_of(request)
        if token is None or not hmac.compare_digest(token.encode(), self._token.encode()):
            # Recorded: another run's token, or one kept from an ended run, is an attack to audit.
            sent = "none sent" if token is None else "a run token, not this run's"
            if token is not None and not token.startswith(RUN_TOKEN_PREFIX):
                sent = "not a run token"
            return {}, self._refuse(401, "authentication_error", f"corral: unknown run token ({sent})")
        raw = await self._read_body(request)
        if raw is None:
            message = f"corral: the request body is over the proxy's limit of {self.max_body_bytes} bytes"
            refused = self._refuse(413, "request_too_large", message)
            # Hang up rather than drain the rest: the sender may have gigabytes more to push.
            refused.headers["connection"] = "close"
            return {}, refused
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return {}, _error(400, "invalid_request_error", "corral: request body is not JSON")
        finally:
            del raw
        if not isinstance(body, dict):
            return {}, _error(400, "invalid_request_error", "corral: request body must be a JSON object")
        model = body.get("model")
        if model not in self.pinned_models:
            pinned = ", ".join(sorted(self.pinned_models))
            message = f"corral: model {model} is not pinned for this run (pinned: {pinned})"
            return body, self._refuse(400, "invalid_request_error", message, model)
        problem = request_filter.refusal(body)
        if problem is not None:
            message = f"corral: {problem} (see docs/security.md, 'Model proxy')"
            return body, self._refuse(400, "invalid_request_error", message, model)
        # Forward the body as parsed, never the raw bytes: a body with duplicate keys must mean the
        # same thing upstream as it did to the checks.
        return body, json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    async def _admitted(
        self, request: Request
    ) -> tuple[dict[str, Any], list[str], httpx.Request | Response, Callable[[], None]]:
        """`_admit` under the buffering slot, which is given back once the forwarded copy has been
        sent upstream (`release`, idempotent, also runs when sending fails)."""
        await self._buffering.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._buffering.release()

        try:
            body, admitted = await self._admit(request)
        except BaseException:
            release()
            raise
        if isinstance(admitted, Response):
            release()
            return body, [], admitted, release
        betas, dropped = request_filter.split_betas(request.headers.get("anthropic-beta"))
        return body, dropped, self._upstream_request(request, admitted, betas, release), release

    def _upstream_request(
        self, request: Request, payload: bytes, betas: list[str], release: Callable[[], None]
    ) -> httpx.Request:
        headers = {k: v for k in _FORWARD_REQUEST_HEADERS if (v := request.headers.get(k))}
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        headers["content-type"] = "application/json"
        headers["content-length"] = str(len(payload))
        if self.upstream.api_key:
            headers["x-api-key"] = self.upstream.api_key
        url = self.upstream.base_url.rstrip("/") + request.url.path
        query = request_filter.forward_query(request.url.query)
        if query:
            url += "?" + query

        async def once() -> AsyncIterator[bytes]:
            # A generator rather than `content=`: the request object would keep the bytes for as
            # long as the response streams, this lets them go once they are sent.
            nonlocal payload
            try:
                data, payload = payload, b""
                yield data
            finally:
                release()

        return self._http().build_request("POST", url, headers=headers, content=once())

    async def _count_tokens(self, request: Request) -> Response:
        """Filtered like Messages, and audited as a request and a response with operation
        `count_tokens`; it does not count as an exchange."""
        started = time.perf_counter()
        body, dropped, outgoing, release = await self._admitted(request)
        if isinstance(outgoing, Response):
            return outgoing
        model, exchange_id = str(body["model"]), uuid.uuid4().hex
        self._sink.emit(_request_event(body, exchange_id, dropped, operation="count_tokens"))
        del body  # the parsed body is not held while the upstream answers
        reassembler = Reassembler()
        try:
            upstream = await self._http().send(outgoing)
        except Exception as exc:  # an in-process upstream raises whatever its app raises
            message = f"corral: model upstream {self.upstream.name} failed: {type(exc).__name__}: {exc}"
            reassembler.result.error, reassembler.result.stop_reason = message, "error"
            self._record(model, exchange_id, reassembler.finish(), started, operation="count_tokens")
            return _error(502, "api_error", message)
        finally:
            release()
        _reassemble_json(reassembler, upstream.content, upstream.status_code)
        with contextlib.suppress(ValueError):
            counted = json.loads(upstream.content)
            if isinstance(counted, dict) and isinstance(counted.get("input_tokens"), int):
                reassembler.result.input_tokens = counted["input_tokens"]
        self._record(model, exchange_id, reassembler.finish(), started, operation="count_tokens")
        return Response(upstream.content, upstream.status_code, headers=_response_headers(upstream))

    async def _messages(self, request: Request) -> Response:
        started = time.perf_counter()
        body, dropped, outgoing, release = await self._admitted(request)
        if isinstance(outgoing, Response):
            return outgoing
        model = str(body["model"])
        gave_up = self.failures.refusal()
        if gave_up:
            release()
            # A 400, which no client retries: every attempt the bound allows has been made and recorded.
            return self._refuse(400, "invalid_request_error", f"corral: {gave_up}; not forwarded", model)
        refusal, reason = self.budget.admit()
        if refusal:
            release()
            # 400, not 429: Claude Code retries a 429, and no retry can succeed on a spent budget.
            status, error_type = (
                (400, "invalid_request_error") if refusal == "budget" else (429, "rate_limit_error")
            )
            word = "budget exhausted" if refusal == "budget" else "too many concurrent requests"
            return self._refuse(status, error_type, f"corral: {word}: {reason}", model)
        exchange_id = uuid.uuid4().hex
        self._sink.emit(_request_event(body, exchange_id, dropped))
        streams = bool(body.get("stream"))
        del body  # the parsed body is not held while the upstream answers, which may take minutes
        self.exchanges += 1
        reassembler = Reassembler()
        charged = False
        status = 0
        failure: Failure | None = None

        def record() -> None:
            nonlocal charged
            result = reassembler.finish()
            if not charged:
                charged = True
                self.budget.finish(model, result.input_tokens, result.output_tokens)
                self._count_attempt(status, failure, result)
            self._record(model, exchange_id, result, started)

        def failed(exc: Exception) -> str:
            nonlocal failure
            if isinstance(exc, httpx.ReadTimeout) and status:
                what = f"stream stalled (no data for {self.stream_idle_seconds:g}s)"
                message = f"corral: model upstream {self.upstream.name} {what}"
            else:
                what = type(exc).__name__
                message = f"corral: model upstream {self.upstream.name} failed: {what}: {exc}"
            failure = Failure(0, what)
            reassembler.result.error = message
            reassembler.result.stop_reason = "error"
            return message

        if streams:
            # Between two chunks, not over the whole answer: the API sends pings while the model
            # thinks, so a silence this long is a stall (Claude Code's own watchdog waits 5 minutes).
            timeout = httpx.Timeout(self._timeout, connect=15.0, read=self.stream_idle_seconds)
            outgoing.extensions["timeout"] = timeout.as_dict()
        try:
            upstream = await self._http().send(outgoing, stream=True)
        except Exception as exc:  # an in-process upstream raises whatever its app raises
            message = failed(exc)
            record()
            return _error(502, "api_error", message)
        except anyio.get_cancelled_exc_class():
            # The proxy is stopping (the run ended) while the upstream still owes the answer: the
            # request is on record, so its outcome must be too.
            failed(TimeoutError("no answer before the run stopped"))
            record()
            raise
        finally:
            release()
        status = upstream.status_code

        if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
            try:
                content = await upstream.aread()
            except httpx.HTTPError as exc:
                message = failed(exc)
                record()
                return _error(502, "api_error", message)
            finally:
                await upstream.aclose()
            _reassemble_json(reassembler, content, upstream.status_code)
            record()
            return Response(content, upstream.status_code, headers=_response_headers(upstream))

        async def passthrough() -> AsyncIterator[bytes]:
            parser = SseParser()
            try:
                async for chunk in upstream.aiter_bytes():
                    for event in parser.feed(chunk):
                        reassembler.add(event)
                    yield chunk
                for event in parser.close():
                    reassembler.add(event)
            except httpx.HTTPError as exc:
                # The headers are gone already; end the stream the way the API reports a mid-stream
                # failure, so Claude Code sees an error event rather than a silently cut response.
                error = error_body("api_error", failed(exc))
                yield f"\n\nevent: error\ndata: {json.dumps(error)}\n\n".encode()
            finally:
                # Also runs when Claude Code hangs up mid-stream: the audit keeps what it was sent.
                # Record first, then close shielded: a cancelled await here must not lose either.
                record()
                with anyio.CancelScope(shield=True):
                    await upstream.aclose()

        return StreamingResponse(
            passthrough(), status_code=upstream.status_code, headers=_response_headers(upstream)
        )

    def _count_attempt(self, status: int, failure: Failure | None, result: Reassembled) -> None:
        """One attempt, for the bound on consecutive failures: a transport failure or a stall, a
        retryable status, or an `error` event in a stream count as failed; a whole answer resets."""
        if failure is None and status in RETRYABLE_STATUSES:
            failure = Failure(status, _error_type(result.error) or f"HTTP {status}")
        elif failure is None and status < 400 and result.error:  # an `error` event after a 200
            failure = Failure(0, f"{_error_type(result.error) or 'error'} mid-stream")
        if failure is not None:
            self.failures.failed(failure)
        elif status < 400:
            self.failures.succeeded()

    def _record(
        self, model: str, exchange_id: str, result: Reassembled, started: float, *, operation: str = "chat"
    ) -> None:
        self._sink.emit(
            ModelResponse(
                request_model=model,
                operation=operation,
                response_model=result.model,
                response_id=result.response_id,
                exchange_id=exchange_id,
                stop_reason=result.stop_reason,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                text=result.text,
                thinking=result.thinking,
                tool_uses=result.tool_uses,
                latency_ms=(time.perf_counter() - started) * 1000.0,
            )
        )

    # ---- serving ---------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._server.port

    def serve_unix(self, path: str | Path, *, mode: int = 0o666) -> Path:
        """Serve on a unix socket at `path`. `mode` defaults to world-connectable because the sandbox
        user's uid differs from ours; guard access with the per-run directory's permissions."""
        self._server.start(unix_path=path, unix_mode=mode)
        assert self._server.unix_path is not None
        return self._server.unix_path

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on host:port (port 0 picks a free one). Returns the bound port."""
        self._server.start(tcp=(host, port))
        assert self._server.port is not None
        return self._server.port

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and remove the socket file. Safe to call twice and after a failed start."""
        self._server.stop(timeout)

    def __enter__(self) -> ModelProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _request_event(
    body: dict[str, Any], exchange_id: str, dropped_betas: list[str], *, operation: str = "chat"
) -> ModelRequest:
    tools, messages = body.get("tools"), body.get("messages")
    return ModelRequest(
        request_model=str(body["model"]),
        operation=operation,
        exchange_id=exchange_id,
        messages=len(messages) if isinstance(messages, list) else 0,
        tools=len(tools) if isinstance(tools, list) else 0,
        stream=bool(body.get("stream")),
        last_user=_summarise_user_turn(messages),
        dropped_betas=dropped_betas,
    )


def _response_headers(upstream: httpx.Response) -> dict[str, str]:
    headers = {"content-type": upstream.headers.get("content-type", "application/json")}
    for name, value in upstream.headers.items():
        name = name.lower()
        if name.startswith(_FORWARD_RESPONSE_PREFIXES):
            headers[name] = clamp_retry_header(name, value) if name.startswith("retry-after") else value
    return headers


def _error_type(error: str) -> str:
    """The Anthropic error type in a reassembled error ("overloaded_error: ..."), or ""."""
    kind = error.split(":", 1)[0]
    return kind if re.fullmatch(r"[a-z_]+_error", kind) else ""


def _reassemble_json(reassembler: Reassembler, content: bytes, status: int) -> None:
    try:
        message = json.loads(content)
    except ValueError:
        message = None
    if isinstance(message, dict):
        reassembler.add_message(message)
    if status >= 400 and not reassembler.result.error:
        reassembler.result.stop_reason = "error"
        reassembler.result.error = f"HTTP {status}: {content[:_SUMMARY_CHARS].decode(errors='replace')}"
