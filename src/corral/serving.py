"""One way to serve an ASGI app in the background: uvicorn on its own event loop in a daemon thread, on
a unix socket (a run's `model.sock` or `gateway.sock`), a TCP port, or both.

The listeners are bound in the caller's thread before the server starts, so a busy address fails
loudly at `start()`. A unix socket path that something still answers on is refused; a socket file that
nobody answers on (what a killed run leaves) is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corral.errors import CorralError, ServeError

MAX_HEAD_BYTES = 1024 * 1024
"""What a connection may send before a request's headers are complete. uvicorn keeps a request's URL
and headers with no limit of its own; an asyncio read is at most 256 KiB, so a legitimate request
(a few KiB of headers and the start of its body) stays far below this."""

Around = Callable[[], AbstractAsyncContextManager[object]]
"""An async context entered on the server's loop before it starts listening and left after it stops:
for components whose tasks must share the server's loop (the gateway's upstreams)."""


class BackgroundServer:
    """Serve `app` in a thread. `start` once, `stop` in a finally (safe to call twice)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str,
        around: Around | None = None,
        graceful_timeout: int = 3,
        limit_concurrency: int | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self._around = around
        self._graceful_timeout = graceful_timeout
        self._limit_concurrency = limit_concurrency
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.unix_path: Path | None = None
        self.port: int | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(
        self,
        *,
        unix_path: str | Path | None = None,
        unix_mode: int = 0o666,
        tcp: tuple[str, int] | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        """Bind, then serve. `unix_mode` defaults to world-connectable because the sandbox user's uid
        differs from ours: guard access with the socket directory's permissions. TCP port 0 picks a
        free port, found afterwards in `port`."""
        if self._thread is not None:
            raise ServeError(f"the {self.name} is already serving", hint="stop() it before starting again")
        if unix_path is None and tcp is None:
            raise ServeError(f"the {self.name} needs a unix socket path or a TCP address", hint="pass one")
        sockets: list[socket.socket] = []
        try:
            if unix_path is not None:
                sockets.append(self._bind_unix(Path(unix_path), unix_mode))
            if tcp is not None:
                sockets.append(self._bind_tcp(*tcp))
                self.port = int(sockets[-1].getsockname()[1])
        except BaseException:
            for s in sockets:
                s.close()
            self._unlink()
            raise
        # httptools (a dependency), not h11: the gateway's per-call overhead in docs/benchmarks.md
        # depends on it.
        config = uvicorn.Config(
            self.app,
            http=BoundedHttpTools,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=self._graceful_timeout,
            limit_concurrency=self._limit_concurrency,
        )
        server = self._server = uvicorn.Server(config)
        self._error = None
        self._ready.clear()
        thread = self._thread = threading.Thread(
            target=self._run, args=(server, sockets), name=f"corral-{self.name}", daemon=True
        )
        thread.start()
        if not self._ready.wait(ready_timeout) or not server.started:
            error = self._error
            self.stop()
            if isinstance(error, CorralError):
                raise error
            raise ServeError(
                f"the {self.name} did not start"
                + (f": {type(error).__name__}: {error}" if error else f" within {ready_timeout:g}s"),
                hint="check that the socket path or port is usable",
            ) from error
        # The listening sockets now belong to uvicorn's asyncio servers, which close them on exit.

    def _run(self, server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        try:
            asyncio.run(self._main(server, sockets))
        except BaseException as exc:  # surfaced by start(); the thread must not die silently
            self._error = exc
        finally:
            for s in sockets:
                s.close()
            self._ready.set()

    async def _main(self, server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        around = self._around() if self._around is not None else contextlib.nullcontext()
        async with around:
            serving = asyncio.ensure_future(server.serve(sockets=sockets))
            while not server.started and not serving.done():
                await asyncio.sleep(0.005)
            if server.started:
                self._ready.set()
            await serving

    def _bind_unix(self, path: Path, mode: int) -> socket.socket:
        if path.exists() or path.is_symlink():
            if not path.is_socket() or unix_in_use(path):
                raise ServeError(
                    f"cannot serve the {self.name} on {path}: the path is in use",
                    hint="stop what serves there or remove the file; `corral gc` clears sockets left by "
                    "a killed run",
                )
            path.unlink()  # a stale socket from a killed run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            self.unix_path = path
            os.chmod(path, mode)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ServeError(
                f"cannot serve the {self.name} on {path}: {exc.strerror or exc}",
                hint="check that the socket directory exists and is writable",
            ) from exc
        return sock

    def _bind_tcp(self, host: str, port: int) -> socket.socket:
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
            raise ServeError(
                f"cannot serve the {self.name} on {host}:{port}: {exc.strerror or exc}",
                hint="pick a free port, or 0 for any",
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

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C still reaches the caller between joins)."""
        thread = self._thread
        while thread is not None and thread.is_alive():
            thread.join(0.5)

    def _unlink(self) -> None:
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_path.unlink()
            self.unix_path = None


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on what a request's head may take: past
    `MAX_HEAD_BYTES` before the headers are complete, a 431 and a hang-up."""

    _in_head = True
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                if not self.transport.is_closing():  # once; anything still arriving is dropped
                    self.transport.write(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                        b"connection: close\r\n\r\n"
                    )
                    self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0  # keep-alive: the next request's head starts
        super().on_message_complete()


def unix_in_use(path: Path) -> bool:
    """Whether something accepts connections on the unix socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True
