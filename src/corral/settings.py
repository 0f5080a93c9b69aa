"""Host-side settings, from the environment with the prefix CORRAL_ (one place, read on demand)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".corral")
    """Where corral keeps its state DB, audit DB, spool, worktrees and per-run socket directories."""
    state_url: str | None = None
    audit_url: str | None = None
    team: str | None = None
    """`CORRAL_TEAM`: the team every command acts in, unless `--team` says otherwise."""
    sandbox_runtime: str | None = None
    """`CORRAL_SANDBOX_RUNTIME`: `runc` or `runsc` for every sandbox on this host, over the config."""
    forge_dir: Path | None = None
    """`CORRAL_FORGE_DIR`: where the local forge keeps its pull requests (default: under the home).
    The hosts of a fleet that uses the local forge share one."""
    temporal_address: str | None = None
    """`CORRAL_TEMPORAL_ADDRESS` (host:port): runs become Temporal workflows (`corral.fleet`)."""
    temporal_namespace: str = "default"
    temporal_queue: str = "corral"
    """`CORRAL_TEMPORAL_QUEUE`: the fleet's shared task queue; hosts' queues and registry entries are
    named after it, so several fleets can share one namespace."""
    host_id: str | None = None
    """`CORRAL_HOST_ID`: this sandbox host's name in the fleet (`corral worker --host-id`)."""
    fleet_heartbeat_seconds: float = 30.0
    """`CORRAL_FLEET_HEARTBEAT_SECONDS`: a host activity not heard from for this long is retried
    elsewhere (its worker is taken for dead)."""

    @property
    def state_db(self) -> Path:
        return self.home / "state.db"

    @property
    def audit_db(self) -> Path:
        return self.home / "audit.db"

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def worktrees_dir(self) -> Path:
        return self.home / "worktrees"

    @property
    def deploy_dir(self) -> Path:
        """The deploy backends' local state: the local target's builds, servers and records."""
        return self.home / "deploy"

    @property
    def sockets_dir(self) -> Path:
        # Kept short: a unix socket path must fit in 108 bytes.
        return self.home / "s"

    @property
    def local_forge_dir(self) -> Path:
        return self.forge_dir or self.home / "forge"

    @property
    def host_id_file(self) -> Path:
        """Written by `corral worker`: which fleet host this home belongs to (read by `corral gc`)."""
        return self.home / "host-id"

    def fleet_host(self) -> str | None:
        if self.host_id:
            return self.host_id
        path = self.host_id_file
        return path.read_text().strip() or None if path.is_file() else None

    def run_socket_dir(self, run_id: str) -> Path:
        return self.sockets_dir / run_id

    @property
    def shell_files_dir(self) -> Path:
        """Per-run managed settings and hook forwarder of `corral shell` sessions, one directory each."""
        return self.home / "shell"


def load_settings() -> Settings:
    return Settings()
