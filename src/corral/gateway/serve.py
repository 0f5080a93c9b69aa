"""Serving: the bearer-token guard, the Starlette app around the MCP session manager, served in a
background thread (corral/serving.py) on a unix socket (a run's `gateway.sock`) or a TCP port.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.errors import TokenRefused
from corral.gateway.lean import LeanMcpApp
from corral.gateway.server import TOKEN_STATE_KEY, Gateway
from corral.gateway.tokens import token_parts
from corral.serving import BackgroundServer

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
            self.gateway.audit_rejected_token(exc, public_token_id(token.strip()))
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


def public_token_id(token: str) -> str:
    """The id part of a `crt_<id>_<secret>` token (public: the audit records token ids), or "" for
    anything else, so no presented secret or pasted key reaches the audit."""
    parts = token_parts(token)
    return parts[0] if parts is not None and re.fullmatch(r"[0-9a-f]{16}", parts[0]) else ""


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
        hosts = None if uds else [f"{host}:*", "localhost:*"]
        app = build_app(gateway, allowed_hosts=hosts, transport=transport)
        self._server = BackgroundServer(app, name="gateway", around=self._upstreams, graceful_timeout=2)

    @contextlib.asynccontextmanager
    async def _upstreams(self) -> AsyncIterator[None]:
        # The upstreams' tasks live on the server's loop, started before it listens.
        async with anyio.create_task_group() as tg:
            await self.gateway.start(tg)
            try:
                yield
            finally:
                await self.gateway.aclose()
                tg.cancel_scope.cancel()

    def start(self, timeout: float = 60.0) -> None:
        if self.uds is not None:
            self.uds.parent.mkdir(parents=True, exist_ok=True)
            self._server.start(unix_path=self.uds, ready_timeout=timeout)
        else:
            self._server.start(tcp=(self.host, self.port), ready_timeout=timeout)
            assert self._server.port is not None
            self.port = self._server.port

    @property
    def url(self) -> str:
        return f"http://{'localhost' if self.uds else self.host + ':' + str(self.port)}{MCP_PATH}"

    def stop(self, timeout: float = 15.0) -> None:
        self._server.stop(timeout)

    def wait(self) -> None:
        self._server.wait()
