"""Start `corral server`: recover what a previous server left, then serve the app on TCP."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from corral.errors import ServeError

if TYPE_CHECKING:
    from corral.services import Services
    from corral.serving import BackgroundServer

DEFAULT_LISTEN = "127.0.0.1:8750"


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ServeError(f"--listen {listen!r} is not HOST:PORT", hint=f"e.g. --listen {DEFAULT_LISTEN}")
    return host, int(port)


def session_secret(home: Path) -> str:
    """Kept under corral's home (mode 0600), so sessions survive a restart of the server."""
    path = home / "server-session.key"
    if path.is_file():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def recover(services: Services) -> list[str]:
    """Runs a previous server accepted and did not finish: marked failed, containers removed (gc)."""
    from corral.gc import collect

    try:
        backend = services.sandbox_backend()
    except Exception:  # no Docker Engine: still mark the runs failed; their containers wait for gc
        backend = None
    return list(collect(services.settings, services.state(), backend, services.audit()).runs_failed)


def start(services: Services, listen: str) -> BackgroundServer:
    from corral.serving import BackgroundServer
    from corral.web.app import create_app
    from corral.web.runner import Runner

    app = create_app(services, Runner(services), session_secret(services.settings.home))
    server = BackgroundServer(app, name="corral server", graceful_timeout=2)
    server.start(tcp=parse_listen(listen))
    return server
