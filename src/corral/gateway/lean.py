"""A lean streamable HTTP transport for the gateway: JSON-RPC over POST, answered as JSON.

The gateway never sends server-initiated messages (no sampling, no progress, no list-changed), so it
needs only the part of the streamable HTTP transport (protocol revisions 2024-11-05 to 2025-11-25) where
every request is answered by one JSON body:

- `POST` carries one message (or a batch, for 2025-03-26 clients). Requests get `200 application/json`.
  Notifications and responses get `202`.
- `initialize` opens a session. Its `Mcp-Session-Id` must come back on every later request, from the same
  token; an unknown id gets `404`, so the client opens a new session.
- `GET` gets `405`: this server opens no stream. `DELETE` ends the session.

The SDK's session manager (`serve.build_app(..., transport="sdk")`) does the same with SSE support. This
one exists for cost: it spends about a third of the CPU per call, and the gateway sits on the path of
every tool call. Messages are still parsed and results built with the SDK's `mcp_types` models.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import OrderedDict
from typing import Any

import mcp_types as types
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from corral.gateway.server import TOKEN_STATE_KEY, Gateway
from corral.gateway.tokens import TokenRecord

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024
MAX_SESSIONS = 10_000
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700,
    -32600,
    -32601,
    -32602,
    -32603,
)


def _error(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


async def _respond(
    send: Send, status: int, body: Any = None, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    head = [(b"content-length", str(len(payload)).encode()), *(headers or [])]
    if body is not None:
        head.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})


class LeanMcpApp:
    """ASGI app for `/mcp`, behind `serve.TokenGuard` (which puts the verified token in the scope)."""

    def __init__(self, gateway: Gateway, *, allowed_origins: tuple[str, ...] | None = None) -> None:
        self.gateway = gateway
        self.allowed_origins = allowed_origins
        self._sessions: OrderedDict[str, tuple[str, str]] = OrderedDict()
        """session id -> (token id that opened it, negotiated protocol version)."""
        self.info = {"name": "corral", "version": "0.1.0"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        if origin is not None and self.allowed_origins is not None and origin not in self.allowed_origins:
            await _respond(send, 403, _error(None, INVALID_REQUEST, f"origin {origin} is not allowed"))
            return
        record: TokenRecord = scope["state"][TOKEN_STATE_KEY]
        method = scope["method"]
        session_id = headers.get("mcp-session-id")
        if method == "GET":
            await _respond(send, 405, None, [(b"allow", b"POST, DELETE")])
            return
        if method == "DELETE":
            known = session_id is not None and self._owner(session_id) == record.token_id
            if known:
                self._sessions.pop(session_id, None)  # type: ignore[arg-type]
            await _respond(send, 200 if known else 404)
            return
        if method != "POST":
            await _respond(send, 405, None, [(b"allow", b"POST, DELETE")])
            return
        body = await self._body(receive)
        if body is None:
            await _respond(send, 413, _error(None, INVALID_REQUEST, "request body too large"))
            return
        try:
            message = json.loads(body)
        except ValueError:
            await _respond(send, 400, _error(None, PARSE_ERROR, "body is not JSON"))
            return
        batch = message if isinstance(message, list) else [message]
        opening = any(isinstance(m, dict) and m.get("method") == "initialize" for m in batch)
        extra: list[tuple[bytes, bytes]] = []
        if opening:
            session_id = self._open(record.token_id)
            extra.append((b"mcp-session-id", session_id.encode()))
        elif session_id is None:
            await _respond(
                send, 400, _error(None, INVALID_REQUEST, "missing Mcp-Session-Id; initialize first")
            )
            return
        elif self._owner(session_id) != record.token_id:
            # Unknown, expired, or opened by another token: answer as if it never existed.
            await _respond(send, 404, _error(None, INVALID_REQUEST, "session not found"))
            return
        replies = [r for m in batch if (r := await self._handle(m, record, session_id)) is not None]
        if not replies:
            await _respond(send, 202, None, extra)
        else:
            await _respond(send, 200, replies if isinstance(message, list) else replies[0], extra)

    async def _body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
            if not event.get("more_body"):
                return b"".join(chunks)

    def _open(self, token_id: str) -> str:
        session_id = secrets.token_hex(16)
        self._sessions[session_id] = (token_id, LATEST_HANDSHAKE_VERSION)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id

    def _owner(self, session_id: str) -> str | None:
        entry = self._sessions.get(session_id)
        return entry[0] if entry else None

    async def _handle(self, message: Any, record: TokenRecord, session_id: str) -> dict[str, Any] | None:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
        method, msg_id = message.get("method"), message.get("id")
        if method is None or msg_id is None:
            return None  # a notification, or a response to a request we never send: accepted
        params = message.get("params") or {}
        try:
            result = await self._dispatch(str(method), params, record, session_id)
        except ValidationError as exc:
            return _error(msg_id, INVALID_PARAMS, f"invalid params for {method}: {exc.error_count()} errors")
        except LookupError:
            return _error(msg_id, METHOD_NOT_FOUND, f"method {method} is not served by the corral gateway")
        except Exception as exc:
            # E.g. the audit sink failed to persist the decision: the call did not run (fail closed).
            log.exception("gateway %s failed", method)
            return _error(
                msg_id, INTERNAL_ERROR, f"the gateway could not serve {method}: {type(exc).__name__}"
            )
        return {"jsonrpc": "2.0", "id": msg_id, "result": result}

    async def _dispatch(
        self, method: str, params: Any, record: TokenRecord, session_id: str
    ) -> dict[str, Any]:
        if method == "tools/call":
            call = types.CallToolRequestParams.model_validate(params)
            result = await self.gateway.call_tool(record, call.name, dict(call.arguments or {}))
            return result.model_dump(by_alias=True, mode="json", exclude_none=True)
        if method == "tools/list":
            listed = await self.gateway.list_tools(record)
            return listed.model_dump(by_alias=True, mode="json", exclude_none=True)
        if method == "initialize":
            wanted = params.get("protocolVersion") if isinstance(params, dict) else None
            version = wanted if wanted in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
            self._sessions[session_id] = (record.token_id, version)
            return {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": self.info,
            }
        if method == "ping":
            return {}
        raise LookupError(method)
