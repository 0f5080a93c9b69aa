"""The host side of the egress self-test: a TCP server on the host's 127.0.0.1 that counts who connects.

A sandbox must never reach it; the run fails closed when it saw a connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["HostProbe", "start_host_probe"]


class HostProbe:
    """A TCP server on the host's 127.0.0.1 that counts who connects. The sandbox must not."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.connections = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="corral-host-probe", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # stop() shut the socket down
                return
            if self._done.is_set():
                conn.close()
                return
            self.connections += 1
            conn.close()

    def stop(self) -> int:
        """Stop serving; return how many connections arrived."""
        self._done.set()
        # shutdown() wakes the blocked accept() at once (no polling timeout to wait out).
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)
        self._server.close()
        return self.connections


def start_host_probe() -> HostProbe:
    """Start a HostProbe on 127.0.0.1; use `.port`, and `.stop()` (returns the connection count)."""
    return HostProbe()
