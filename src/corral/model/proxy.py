"""The host-side model proxy: the only way a sandbox reaches a model.

The sandbox holds a per-run placeholder token, never a key. The proxy checks that token, refuses any
model but the run's pinned model and small model, swaps the placeholder for the real key, forwards to
the upstream (the Anthropic API, any compatible endpoint, or the in-process scripted model), streams
the answer back unbuffered, and records every exchange as typed events.

It is served on the run's `model.sock` (a unix socket bind-mounted into the sandbox), or on a
127.0.0.1 port for `--listen` and tests, by uvicorn in a background thread with explicit start/stop.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.audit import EventSink
from corral.errors import ModelError
from corral.events import ModelRefused, ModelRequest, ModelResponse
from corral.model.playbook import Playbook
from corral.model.scripted import anthropic_http_error, error_body, scripted_app
from corral.model.sse import Reassembled, Reassembler, SseParser

DEFAULT_BASE_URL = "https://api.anthropic.com"
SCRIPTED_BASE_URL = "http://scripted.corral.invalid"
_FORWARD_REQUEST_HEADERS = ("anthropic-version", "anthropic-beta", "accept")
_FORWARD_RESPONSE_PREFIXES = ("anthropic-", "request-id", "x-request-id", "retry-after", "x-should-retry")
_SUMMARY_CHARS = 400


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
            return _SYSTEM_REMINDER.sub("", content).strip()[:_SUMMARY_CHARS]
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
        return " | ".join(p.strip() for p in parts if p.strip())[:_SUMMARY_CHARS]
    return ""


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
        self._client: httpx.AsyncClient | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._unix_path: Path | None = None
        self.port: int | None = None
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

    async def _admit(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """Authenticate, parse and pin-check a request. Returns the body, or the refusal to send."""
        token = _token_of(request)
        if token is None or not hmac.compare_digest(token.encode(), self._token.encode()):
            return {}, _error(401, "authentication_error", "corral: unknown run token")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return {}, _error(400, "invalid_request_error", "corral: request body is not JSON")
        if not isinstance(body, dict):
            return {}, _error(400, "invalid_request_error", "corral: request body must be a JSON object")
        model = body.get("model")
        if model not in self.pinned_models:
            pinned = ", ".join(sorted(self.pinned_models))
            message = f"corral: model {model} is not pinned for this run (pinned: {pinned})"
            self._sink.emit(ModelRefused(request_model=str(model), reason=message))
            return body, _error(400, "invalid_request_error", message)
        return body, None

    def _upstream_request(self, request: Request, body: dict[str, Any]) -> httpx.Request:
        headers = {k: v for k in _FORWARD_REQUEST_HEADERS if (v := request.headers.get(k))}
        headers["content-type"] = "application/json"
        if self.upstream.api_key:
            headers["x-api-key"] = self.upstream.api_key
        url = self.upstream.base_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        # Forward the body as parsed, never the raw bytes: a body with duplicate keys must mean the
        # same thing upstream as it did to the pin check.
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return self._http().build_request("POST", url, headers=headers, content=content)

    async def _count_tokens(self, request: Request) -> Response:
        body, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        try:
            upstream = await self._http().send(self._upstream_request(request, body))
        except Exception as exc:  # an in-process upstream raises whatever its app raises
            return _error(502, "api_error", f"corral: model upstream {self.upstream.name} failed: {exc}")
        return Response(upstream.content, upstream.status_code, headers=_response_headers(upstream))

    async def _messages(self, request: Request) -> Response:
        started = time.perf_counter()
        body, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        model = str(body["model"])
        exchange_id = uuid.uuid4().hex
        tools = body.get("tools")
        messages = body.get("messages")
        self._sink.emit(
            ModelRequest(
                request_model=model,
                exchange_id=exchange_id,
                messages=len(messages) if isinstance(messages, list) else 0,
                tools=len(tools) if isinstance(tools, list) else 0,
                stream=bool(body.get("stream")),
                last_user=_summarise_user_turn(messages),
            )
        )
        self.exchanges += 1
        reassembler = Reassembler()

        def record() -> None:
            self._record(model, exchange_id, reassembler.finish(), started)

        def failed(exc: Exception) -> str:
            message = f"corral: model upstream {self.upstream.name} failed: {type(exc).__name__}: {exc}"
            reassembler.result.error = message
            reassembler.result.stop_reason = "error"
            return message

        try:
            upstream = await self._http().send(self._upstream_request(request, body), stream=True)
        except Exception as exc:  # an in-process upstream raises whatever its app raises
            message = failed(exc)
            record()
            return _error(502, "api_error", message)

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

    def _record(self, model: str, exchange_id: str, result: Reassembled, started: float) -> None:
        self._sink.emit(
            ModelResponse(
                request_model=model,
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

    def serve_unix(self, path: str | Path, *, mode: int = 0o666) -> Path:
        """Serve on a unix socket at `path`. `mode` defaults to world-connectable because the sandbox
        user's uid differs from ours; guard access with the per-run directory's permissions."""
        self.start(unix_path=path, unix_mode=mode)
        assert self._unix_path is not None
        return self._unix_path

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on host:port (port 0 picks a free one). Returns the bound port."""
        self.start(tcp=(host, port))
        assert self.port is not None
        return self.port

    def start(
        self,
        *,
        unix_path: str | Path | None = None,
        unix_mode: int = 0o666,
        tcp: tuple[str, int] | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        """Bind the listeners here, in the caller's thread, so a busy address fails loudly now."""
        if self._thread is not None:
            raise ModelError("the model proxy is already serving", hint="stop() it before starting again")
        if unix_path is None and tcp is None:
            raise ModelError("the model proxy needs a unix socket path or a TCP address", hint="pass one")
        sockets: list[socket.socket] = []
        try:
            if unix_path is not None:
                sockets.append(self._bind_unix(Path(unix_path), unix_mode))
            if tcp is not None:
                sockets.append(_bind_tcp(*tcp))
                self.port = int(sockets[-1].getsockname()[1])
        except BaseException:
            for s in sockets:
                s.close()
            self._unlink()
            raise
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": sockets}, name="corral-model-proxy", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ModelError(
                    "the model proxy did not start", hint="check that the socket path or port is usable"
                )
            time.sleep(0.005)
        # The listening sockets now belong to uvicorn's asyncio servers, which close them on exit.

    def _bind_unix(self, path: Path, mode: int) -> socket.socket:
        if path.exists() or path.is_symlink():
            if not path.is_socket() or _unix_in_use(path):
                raise ModelError(
                    f"cannot serve the model proxy on {path}: the path is in use",
                    hint="remove it, or run `corral gc` to clear sockets left by a killed run",
                )
            path.unlink()  # a stale socket from a killed run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            self._unix_path = path
            os.chmod(path, mode)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ModelError(
                f"cannot serve the model proxy on {path}: {exc.strerror or exc}",
                hint="check that the socket directory exists and is writable",
            ) from exc
        return sock

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and remove the socket file. Safe to call twice and after a failed start."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout)
        self._unlink()

    def _unlink(self) -> None:
        if self._unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._unix_path.unlink()
            self._unix_path = None

    def __enter__(self) -> ModelProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this. Without it every small SSE write waits on the peer's
        # delayed ACK: about 40 ms per request (uvicorn sets it only on sockets it binds itself).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ModelError(
            f"cannot serve the model proxy on {host}:{port}: {exc.strerror or exc}",
            hint="pick a free port, or 0 for any",
        ) from exc
    return sock


def _unix_in_use(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


def _response_headers(upstream: httpx.Response) -> dict[str, str]:
    headers = {"content-type": upstream.headers.get("content-type", "application/json")}
    for name, value in upstream.headers.items():
        if name.lower().startswith(_FORWARD_RESPONSE_PREFIXES):
            headers[name.lower()] = value
    return headers


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
