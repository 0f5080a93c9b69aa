"""One static HTTP server per deployment (and one per project's production), on 127.0.0.1.

Each runs as its own detached process (`python -m corral.deploy.serve ROOT PORT_FILE`), so it outlives
the `corral approve` or `corral deploy promote` that started it; its pid and port are in PORT_FILE, and
`ensure_server` finds a live one again instead of starting a second. A server ends by itself when its
PORT_FILE is removed (`stop_server`, or the corral home deleted), so none outlives its deployment.
Production's ROOT is a symbolic link that promotion and rollback replace atomically: the server
resolves it per request, so a switch takes effect for the next request with no restart. A path that
resolves outside the current root (a link the build wrote) is answered 404: only the build's own files
are served.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from corral.errors import DeployError


class _Handler(SimpleHTTPRequestHandler):
    root: Path

    def translate_path(self, path: str) -> str:
        translated = super().translate_path(path)
        real_root = os.path.realpath(self.root)
        real = os.path.realpath(translated)
        if real != real_root and not real.startswith(real_root + os.sep):
            return os.path.join(real_root, ".corral-outside-root-404")
        return real

    def log_message(self, format: str, *args: object) -> None:
        return


def serve(root: Path, port_file: Path, port: int = 0) -> None:
    handler = functools.partial(_Handler, directory=str(root))
    _Handler.root = root
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(f"{os.getpid()} {server.server_address[1]}\n")
    os.replace(tmp, port_file)
    threading.Thread(target=_exit_when_gone, args=(server, port_file), daemon=True).start()
    server.serve_forever()


def _exit_when_gone(server: ThreadingHTTPServer, port_file: Path) -> None:
    """A server whose port file is gone (stopped, or its corral home removed) ends by itself."""
    while port_file.exists():
        time.sleep(1.0)
    server.shutdown()


def _alive(pid: int, root: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"corral.deploy.serve" in cmdline and str(root).encode() in cmdline


def read_server(port_file: Path, root: Path) -> tuple[int, int] | None:
    """The (pid, port) of the live server of `root`, if one runs."""
    try:
        pid_text, port_text = port_file.read_text().split()
        pid, port = int(pid_text), int(port_text)
    except (OSError, ValueError):
        return None
    return (pid, port) if _alive(pid, root) else None


def ensure_server(root: Path, port_file: Path, timeout: float = 15.0) -> tuple[int, int]:
    """Find the live server of `root`, or start one (on its old port when free); return (pid, port)."""
    running = read_server(port_file, root)
    if running is not None:
        return running
    old_port = 0
    with contextlib.suppress(OSError, ValueError):
        old_port = int(port_file.read_text().split()[1])
    port_file.unlink(missing_ok=True)
    log = port_file.with_suffix(".log")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.deploy.serve", str(root), str(port_file), str(old_port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = read_server(port_file, root)
        if running is not None:
            return running
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise DeployError(
        f"the server for {root} did not start: {log.read_text(errors='replace')[-500:]}",
        hint="check that 127.0.0.1 has free ports",
    )


def stop_server(port_file: Path, root: Path) -> None:
    running = read_server(port_file, root)
    if running is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running[0], 15)
    port_file.unlink(missing_ok=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
