"""Upstream MCP servers: one pooled `ClientSession` each, reused across calls, restarted after a crash.

Each upstream runs a supervisor task in the gateway's event loop. It opens the transport (a stdio child
process, or a streamable HTTP client), initialises, lists the tools, then waits. A call that fails at
the transport, or outlives the upstream's timeout, marks the session broken: the supervisor tears it
down and opens a fresh one, while the other upstreams keep serving. Credentials are resolved per
upstream into env (stdio) or headers (HTTP); nothing from the inbound request is ever passed on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from corral.errors import ConfigError, UpstreamFailure
from corral.gateway.config import SECRET_REF, UpstreamConfig
from corral.gateway.errlog import redacted_errlog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is calling, from the verified token: what built-in tools bind their effects to."""

    token_id: str
    run_id: str
    principal: str


class Upstream(Protocol):
    name: str
    generation: int
    """Bumped each time the tool list may have changed (every (re)start)."""

    def tools(self) -> list[types.Tool]: ...

    async def start(self, tg: anyio.abc.TaskGroup) -> None: ...

    async def ready(self) -> None:
        """Wait until the upstream serves (its tool list is then current); UpstreamFailure if it can't."""
        ...

    async def call(
        self, tool: str, arguments: dict[str, Any], caller: Caller, generation: int | None = None
    ) -> types.CallToolResult:
        """Call `tool`; with `generation`, refuse if the upstream restarted since (its tools may differ)."""
        ...

    async def aclose(self) -> None: ...


def interpolate(value: str, secret: Callable[[str], str]) -> str:
    return SECRET_REF.sub(lambda m: secret(m.group(1)), value)


class McpUpstream:
    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        secret: Callable[[str], str],
        errlog: Path | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._secret = secret
        self._errlog = errlog
        self.generation = 0
        self.restarts = 0
        self._tools: list[types.Tool] = []
        self._session: ClientSession | None = None
        self._ready = anyio.Event()
        self._restart = anyio.Event()
        self._closing = False
        self._stopped = anyio.Event()
        self._last_error: str = ""

    def tools(self) -> list[types.Tool]:
        return list(self._tools)

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[Any]:
        cfg = self.config
        if cfg.command is not None:
            # Values are resolved at each (re)start, so a rotated file secret takes effect on restart.
            env = {k: interpolate(v, self._secret) for k, v in cfg.env.items()}
            params = StdioServerParameters(command=cfg.command, args=cfg.args, env=env, cwd=cfg.cwd)
            with redacted_errlog(self._errlog) as err:
                async with stdio_client(params, errlog=err) as streams:
                    yield streams
        else:
            assert cfg.url is not None
            headers = {k: interpolate(v, self._secret) for k, v in cfg.headers.items()}
            timeout = httpx2.Timeout(cfg.timeout_seconds, read=max(cfg.timeout_seconds, 300.0))
            async with (
                httpx2.AsyncClient(headers=headers, timeout=timeout) as client,
                streamable_http_client(cfg.url, http_client=client) as streams,
            ):
                yield streams

    async def _pump(self, source: Any, sink: anyio.abc.ObjectSendStream[SessionMessage | Exception]) -> None:
        # Sits between the transport and the session so that end-of-stream (a dead child process)
        # is noticed even with no call in flight, and the session is restarted before the next call.
        async with sink:
            async for item in source:
                await sink.send(item)
        if not self._closing:
            self._last_error = "the upstream closed its stream"
            self._restart.set()

    async def _serve_once(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            send, recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
            pump_group = await stack.enter_async_context(anyio.create_task_group())
            pump_group.start_soon(self._pump, read, send)
            session = await stack.enter_async_context(ClientSession(recv, write))
            with anyio.fail_after(self.config.start_timeout_seconds):
                await session.initialize()
                tools: list[types.Tool] = []
                cursor: str | None = None
                while True:
                    params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    listed = await session.list_tools(params=params)
                    tools.extend(listed.tools)
                    cursor = listed.next_cursor
                    if not cursor:
                        break
            self._tools = tools
            self._session = session
            self.generation += 1
            self._ready.set()
            try:
                await self._restart.wait()
            finally:
                self._session = None
                pump_group.cancel_scope.cancel()

    async def _supervise(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        backoff = 0.2
        try:
            while not self._closing:
                self._restart = anyio.Event()
                started = time.monotonic()
                try:
                    await self._serve_once()
                except Exception as exc:  # any transport or handshake failure: log, back off, retry
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("upstream %s failed: %s", self.name, self._last_error)
                if self._closing:
                    break
                self.restarts += 1
                self._reset_ready()
                backoff = 0.2 if time.monotonic() - started > 10 else min(backoff * 2, 5.0)
                await anyio.sleep(backoff)
        finally:
            self._stopped.set()

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        await tg.start(self._supervise)
        await self.wait_ready(self.config.start_timeout_seconds)

    async def wait_ready(self, timeout: float) -> ClientSession:
        session = self._session
        if session is not None and self._ready.is_set():  # the hot path: no scope, no checkpoint
            return session
        with anyio.move_on_after(timeout):
            while True:
                ready = self._ready
                await ready.wait()
                if self._session is not None:
                    return self._session
                await anyio.sleep(0.01)
        raise UpstreamFailure(
            "unavailable", f"upstream {self.name} is not available ({self._last_error or 'still starting'})"
        )

    def _reset_ready(self) -> None:
        # Replace only a set event: at most one unset event exists, so no waiter holds a stale one.
        if self._ready.is_set():
            self._ready = anyio.Event()

    def _broken(self, why: str) -> None:
        self._last_error = why
        self._session = None
        self._reset_ready()
        self._restart.set()

    async def ready(self) -> None:
        await self.wait_ready(self.config.start_timeout_seconds)

    async def call(
        self, tool: str, arguments: dict[str, Any], caller: Caller, generation: int | None = None
    ) -> types.CallToolResult:
        session = await self.wait_ready(self.config.start_timeout_seconds)
        if generation is not None and generation != self.generation:
            raise UpstreamFailure(
                "unavailable",
                f"upstream {self.name} restarted while the call was being authorised; call again",
            )
        try:
            with anyio.fail_after(self.config.timeout_seconds):
                result = await session.call_tool(tool, arguments)
        except TimeoutError as exc:
            # A hung upstream may hang the next call too: replace it rather than trust it.
            self._broken(f"timed out after {self.config.timeout_seconds}s")
            raise UpstreamFailure(
                "timeout", f"{self.name}.{tool} gave no answer within {self.config.timeout_seconds}s"
            ) from exc
        except Exception as exc:
            if self._restart.is_set() or self._session is not session:
                raise UpstreamFailure(
                    "crash", f"upstream {self.name} died during the call; it is restarting"
                ) from exc
            if _is_protocol_error(exc):
                raise UpstreamFailure("crash", f"{self.name}.{tool} failed: {exc}") from exc
            self._broken(f"{type(exc).__name__}: {exc}")
            raise UpstreamFailure(
                "crash", f"upstream {self.name} failed during the call; it is restarting"
            ) from exc
        if not isinstance(result, types.CallToolResult):
            raise UpstreamFailure(
                "crash", f"{self.name}.{tool} returned a result type the gateway cannot pass on"
            )
        return result

    async def aclose(self) -> None:
        self._closing = True
        self._restart.set()
        with anyio.move_on_after(5):
            await self._stopped.wait()


def _is_protocol_error(exc: Exception) -> bool:
    """An MCP error answer (bad params, unknown tool): the session itself is fine."""
    from mcp.shared.exceptions import MCPError

    code = getattr(exc, "code", None)
    return isinstance(exc, MCPError) and code is not None and code != types.CONNECTION_CLOSED


def build_upstreams(
    configs: Mapping[str, UpstreamConfig],
    secret: Callable[[str], str],
    check: Callable[[str], None],
    log_dir: Path | None = None,
) -> list[McpUpstream]:
    """Upstreams for `configs`; every `${secret:NAME}` is checked now, so a missing one fails at load."""
    for name, cfg in configs.items():
        for ref in cfg.secret_names():
            try:
                check(ref)
            except ConfigError as exc:
                raise ConfigError(f"upstream {name!r}: {exc.message}", hint=exc.hint) from exc
    return [
        McpUpstream(name, cfg, secret, (log_dir / f"upstream-{name}.log") if log_dir else None)
        for name, cfg in configs.items()
    ]
