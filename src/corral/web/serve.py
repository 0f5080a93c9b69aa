"""Start `corral server`: recover what a previous server left, then serve the app on TCP."""

from __future__ import annotations

import os
import secrets
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from corral.errors import ServeError

if TYPE_CHECKING:
    from corral.sandbox.warm import WarmPool
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


def start_pool(services: Services, size: int) -> WarmPool:
    """A warm pool for this process's runs, filling for the scope's `[sandbox]` (or the defaults) now:
    the agent's sandbox with its two bridges and the checks' sandbox. Other images fill on first use."""
    from corral.config import SandboxConfig
    from corral.runs import GATEWAY_PORT, MODEL_PORT
    from corral.sandbox import SandboxSpec, resolve_runtime
    from corral.sandbox.warm import WarmPool

    pool = WarmPool(
        services.docker(),
        size=size,
        home=services.settings.home,
        owner=str(services.settings.home),
        progress=services.progress,
    )
    pool.start()
    config = services.scope.config.sandbox if services.scope.config else SandboxConfig()
    if config.image_name is not None:
        checks = SandboxSpec(
            run_id="warm",
            image=config.image_name,
            workspace=Path("/nonexistent"),
            workdir=config.workdir,
            cpus=config.cpus,
            memory=config.memory,
            pids=config.pids,
            purpose="checks",
            runtime=resolve_runtime(config.runtime),
        )
        bridges = {MODEL_PORT: "model.sock", GATEWAY_PORT: "gateway.sock"}
        pool.want(replace(checks, purpose="agent", socket_dir=Path("/nonexistent"), bridges=bridges))
        pool.want(checks)
    return pool
