"""Serving: the bearer-token guard, the Starlette app around the MCP session manager, and a uvicorn
server in a background thread on a unix socket (a run's `gateway.sock`) or a TCP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
import uvicorn
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.errors import CorralError, TokenRefused
from corral.gateway.lean import LeanMcpApp
from corral.gateway.server import TOKEN_STATE_KEY, Gateway

MCP_PATH = "/mcp"


class TokenGuard:
    """Verifies `Authorization: Bearer` on every HTTP request; 401 (and no upstream call) otherwise.

    The verified record rides in `scope["state"]`; the Authorization header itself is removed from the
    scope, so nothing behind the guard can see, log or forward the clear token.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        auth = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), "")
        scheme, _, token = auth.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise TokenRefused(reason="malformed")
            record = self.gateway.authority.verify(token.strip())
        except TokenRefused as exc:
            self.gateway.audit_rejected_token(exc)
            await _unauthorized(send, exc.reason)
            return
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in headers if k != b"authorization"]
        scope["state"] = {**scope.get("state", {}), TOKEN_STATE_KEY: record}
        # The SDK binds each MCP session to the principal that opened it: another token cannot ride it.
        scope["user"] = AuthenticatedUser(
            AccessToken(token=record.token_id, client_id=record.token_id, scopes=[])
        )
        await self.app(scope, receive, send)


async def _unauthorized(send: Send, problem: str) -> None:
    body = json.dumps({"error": "invalid_token", "error_description": f"capability token {problem}"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (
                    b"www-authenticate",
                    f'Bearer error="invalid_token", error_description="{problem}"'.encode(),
                ),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


Transport = Literal["lean", "sdk"]


def build_app(
    gateway: Gateway, *, allowed_hosts: list[str] | None = None, transport: Transport = "lean"
) -> Starlette:
    """The ASGI app. `lean` (default) answers JSON only and never streams (gateway/lean.py); `sdk` is the
    MCP SDK's session manager with SSE. On a unix socket there is no Host to rebind, so host and origin
    checks are off unless `allowed_hosts` is given."""
    if transport == "lean":
        origins = tuple(f"http://{h.replace(':*', '')}" for h in allowed_hosts) if allowed_hosts else None
        lean = LeanMcpApp(gateway, allowed_origins=origins)
        guarded = TokenGuard(lean, gateway)
        return Starlette(routes=[Route(MCP_PATH, endpoint=guarded, methods=["GET", "POST", "DELETE"])])
    security = (
        TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts, allowed_origins=[]
        )
        if allowed_hosts
        else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    manager = StreamableHTTPSessionManager(
        app=gateway.mcp_server(), json_response=True, security_settings=security, session_idle_timeout=3600
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    endpoint = TokenGuard(StreamableHTTPASGIApp(manager), gateway)
    return Starlette(
        routes=[Route(MCP_PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"])], lifespan=lifespan
    )


class GatewayServer:
    """Runs a gateway (upstreams and HTTP server) on its own event loop in a background thread."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        uds: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        transport: Transport = "lean",
    ) -> None:
        self.gateway = gateway
        self.transport: Transport = transport
        self.uds = uds
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with anyio.create_task_group() as tg:
            await self.gateway.start(tg)
            hosts = None if self.uds else [f"{self.host}:*", "localhost:*"]
            config = uvicorn.Config(
                build_app(self.gateway, allowed_hosts=hosts, transport=self.transport),
                uds=str(self.uds) if self.uds else None,
                host=self.host,
                port=self.port,
                log_level="warning",
                lifespan="on",
                access_log=False,
                timeout_graceful_shutdown=2,
            )
            server = self._uvicorn = uvicorn.Server(config)
            serving = asyncio.ensure_future(server.serve())
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            if serving.done():
                serving.result()
                raise CorralError(
                    "the gateway's HTTP server stopped while starting", hint="see the log above"
                )
            if not self.uds and server.servers:
                self.port = server.servers[0].sockets[0].getsockname()[1]
            self._ready.set()
            try:
                await serving
            finally:
                await self.gateway.aclose()
                tg.cancel_scope.cancel()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to start() or stop(); the thread must not die silently
            self._error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 60.0) -> None:
        if self.uds is not None:
            self.uds.parent.mkdir(parents=True, exist_ok=True)
            self.uds.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._run, name="corral-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise CorralError(
                f"the gateway did not start within {timeout}s", hint="check the upstream commands"
            )
        if self._error is not None:
            raise self._error

    @property
    def url(self) -> str:
        return f"http://{'localhost' if self.uds else self.host + ':' + str(self.port)}{MCP_PATH}"

    def call_soon(self, fn: Any, *args: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 15.0) -> None:
        if self._uvicorn is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(setattr, self._uvicorn, "should_exit", True)
        if self._thread is not None:
            self._thread.join(timeout)
        if self.uds is not None:
            self.uds.unlink(missing_ok=True)

    def wait(self) -> None:
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(0.5)
