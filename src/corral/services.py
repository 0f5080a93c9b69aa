"""The components a run uses, opened lazily from settings and config.

One place decides which store, backend and upstream a command gets, so the CLI and the tests get the
same wiring. Nothing is opened at construction: `corral --help` touches no database and no Docker.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from corral.config import Config
from corral.scope import Scope, choose_team_hint
from corral.settings import Settings

if TYPE_CHECKING:
    from docker import DockerClient

    from corral.audit import EventSink
    from corral.audit.log import AuditLog
    from corral.deploy import Deployer, DeployTarget
    from corral.forge import Forge
    from corral.gateway.run import RunGatewayHandle
    from corral.model.cassette import Cassette
    from corral.model.playbook import Playbook
    from corral.model.proxy import ModelProxy
    from corral.sandbox import SandboxBackend
    from corral.sandbox.warm import WarmPool
    from corral.state.db import StateStore
    from corral.state.models import RunRecord

Progress = Callable[[str], None]
K = TypeVar("K")
V = TypeVar("V")

NO_KEY_TEXT = (
    "corral: no ANTHROPIC_API_KEY is set on the host, so no live model was called. "
    "Export the key for a real run, or pass --playbook FILE for a scripted one."
)
NO_KEY_PLAYBOOK = f"turns:\n  - text: {NO_KEY_TEXT!r}\n"
"""Without an API key and without --playbook, the scripted model only says so."""


@dataclass(frozen=True)
class PreferenceSelection:
    ids: tuple[str, ...]
    section: str


class _Stores:
    """The state stores and audit logs a process has open: one per (state URL, team), one per audit
    URL, opened on first use. Shared by a long-lived process's Services and every run's (`for_run`),
    so it is opened under a lock: two threads asking for the same store at once open it once."""

    def __init__(self) -> None:
        self.states: dict[tuple[str | None, str], StateStore] = {}
        self.audits: dict[str | None, AuditLog] = {}
        self.lock = threading.Lock()

    def get(self, table: dict[K, V], key: K, open_: Callable[[], V]) -> V:
        """`table[key]`, opened by `open_` once: a second thread asking meanwhile waits for it."""
        found = table.get(key)
        if found is None:
            with self.lock:
                found = table.get(key)
                if found is None:
                    found = table[key] = open_()
        return found

    def close(self) -> None:
        with self.lock:
            audits, self.audits = self.audits, {}
            states, self.states = self.states, {}
        for audit in audits.values():
            audit.close()
        for state in states.values():
            state.close()


class Services:
    """`scope` is the team and repository config a command acts in (`corral.scope.resolve_scope`).

    A component opened for a project config uses that project's team and stores; one opened without a
    config uses the scope's. State stores are kept one per (store, team), never "the first caller's".

    A long-lived process (`corral server`, `corral worker`) gives each run `for_run()`: a Services of
    its own (its progress, its scope, its Docker client) that borrows this one's stores.
    """

    def __init__(
        self, settings: Settings, progress: Progress | None = None, scope: Scope | None = None
    ) -> None:
        self.settings = settings
        self.progress: Progress = progress or (lambda _msg: None)
        self.scope = scope or Scope(settings.team or "default", "CORRAL_TEAM" if settings.team else "default")
        self._stores = _Stores()
        self._owns_stores = True
        """False for a run's Services (`for_run`): its stores are its parent's, closed by the parent."""
        self._docker: DockerClient | None = None
        self.warm_pool: WarmPool | None = None
        """A long-lived process's pool of warm sandboxes (`corral server --warm N`): runs claim from it."""

    def for_run(self, progress: Progress | None = None, scope: Scope | None = None) -> Services:
        """The Services of one run in this long-lived process, for the run's thread.

        It shares this Services' state stores and audit logs (already open: no connect, no migration
        check, no second shipper thread per run), its settings and its warm pool. Its own are the
        progress callback, the scope (default: this one's; a store is still chosen by URL and team, so
        a run of another team gets that team's store) and the Docker client: a run's sandboxes talk to
        Docker through a client no other thread uses (`WarmPool.claim`). Its `close()` closes only that
        client and leaves the shared stores open; this Services' `close()` closes them.
        """
        child = Services(self.settings, progress, scope or self.scope)
        child._stores = self._stores
        child._owns_stores = False
        child.warm_pool = self.warm_pool
        return child

    # ---- stores --------------------------------------------------------------------------------

    def _config(self, config: Config | None) -> Config | None:
        return config if config is not None else self.scope.config

    def state_url(self, config: Config | None = None) -> str | None:
        chosen = self._config(config)
        return self.settings.state_url or (chosen.stores.state_url if chosen else None)

    def audit_url(self, config: Config | None = None) -> str | None:
        chosen = self._config(config)
        return self.settings.audit_url or (chosen.stores.audit_url if chosen else None)

    @property
    def team(self) -> str:
        return self.scope.team

    def state(self, config: Config | None = None) -> StateStore:
        """The state store for `config`'s project team, or for the command's scope without one."""
        team = config.project.team if config is not None else self.scope.team
        url = self.state_url(config)

        def open_() -> StateStore:
            from corral.state.db import StateStore

            return StateStore.open(url, self.settings, team=team)

        return self._stores.get(self._stores.states, (url, team), open_)

    def audit(self, config: Config | None = None) -> AuditLog:
        url = self.audit_url(config)

        def open_() -> AuditLog:
            from corral.audit.log import AuditLog

            return AuditLog.open(self.settings, url, allow_offline=True)

        return self._stores.get(self._stores.audits, url, open_)

    def find_run(self, run_id: str) -> RunRecord:
        """A run of the scope's team by id or unique prefix; not found names the team and how to switch."""
        from corral.errors import RunNotFound

        try:
            return self.state().get_run(run_id)
        except RunNotFound as exc:
            raise RunNotFound(exc.message, hint=choose_team_hint(self.scope), team=exc.team) from exc

    # ---- sandbox -------------------------------------------------------------------------------

    def docker(self) -> DockerClient:
        if self._docker is None:
            from corral.sandbox.images import docker_client

            self._docker = docker_client()
        return self._docker

    def sandbox_backend(self) -> SandboxBackend:
        from corral.sandbox.docker import DockerBackend

        if self.warm_pool is not None:
            from corral.sandbox.warm import WarmBackend

            return WarmBackend(self.warm_pool, self.docker(), owner=str(self.settings.home))
        return DockerBackend(self.docker(), owner=str(self.settings.home))

    def ensure_images(self, config: Config, repo: Path) -> str:
        """The image this project's sandboxes run: the named one, or its project image, built when
        missing (with progress) and verified. Never a silent fallback to the default image."""
        from corral.sandbox.project_image import sandbox_image

        return sandbox_image(self.docker(), config, repo, progress=self.progress)

    # ---- model ---------------------------------------------------------------------------------

    def host_api_key(self) -> str | None:
        """The real key, read from the host environment at run time and only ever given to the proxy."""
        return os.environ.get("ANTHROPIC_API_KEY") or None

    def start_model_proxy(
        self,
        config: Config,
        playbook: Playbook | Cassette | None,
        sink: EventSink,
        run_token: str,
        socket_path: Path,
        host_key: str | None,
    ) -> ModelProxy:
        """The run's proxy. Its upstream: a cassette (replay: never a model), the scripted model with
        a playbook or without a key, else the Anthropic API with the host's key."""
        from corral.model.budget import Budget, BudgetLimits
        from corral.model.cassette import Cassette as CassetteModel
        from corral.model.playbook import Playbook as PlaybookModel
        from corral.model.proxy import ModelProxy, Upstream

        if isinstance(playbook, CassetteModel):
            import httpx

            from corral.model.cassette import cassette_app
            from corral.model.proxy import SCRIPTED_BASE_URL

            transport = httpx.ASGITransport(app=cassette_app(playbook))
            upstream = Upstream(base_url=SCRIPTED_BASE_URL, transport=transport, name=playbook.source)
        elif playbook is not None or not host_key:
            if playbook is None:
                self.progress(
                    "no ANTHROPIC_API_KEY on the host and no --playbook: the scripted model answers "
                    "with a final text and no live model is called"
                )
            script = playbook or PlaybookModel.from_text(NO_KEY_PLAYBOOK, "<no API key: scripted model>")
            upstream = Upstream.scripted(script, config.sandbox.workdir)
        else:
            upstream = Upstream.anthropic(host_key, os.environ.get("ANTHROPIC_BASE_URL"))
        proxy = ModelProxy(
            run_token=run_token,
            pinned_models=frozenset({config.agent.model, config.agent.small_model}),
            upstream=upstream,
            sink=sink,
            budget=Budget(BudgetLimits.from_config(config.agent)),
            retries=config.agent.model_retries,
            stream_idle_seconds=config.agent.model_stream_idle_seconds,
        )
        proxy.serve_unix(socket_path)
        return proxy

    # ---- tool gateway --------------------------------------------------------------------------

    def start_gateway(
        self, config: Config, repo: Path, run_id: str, branch: str, socket_path: Path, sink: EventSink
    ) -> RunGatewayHandle:
        """The run's MCP gateway on `socket_path`: the built-in forge and deploy tools, and the team's
        upstreams."""
        from corral.forge.local import LocalForge
        from corral.forge.redacting import RedactingForge
        from corral.gateway.config import GatewayFileConfig, load_gateway_file
        from corral.gateway.run import RunGateway, RunGatewaySpec
        from corral.gateway.state_tokens import StateRecordedTokenStore

        upstreams_file = repo / config.gateway.upstreams_file
        file_config = load_gateway_file(upstreams_file) if upstreams_file.is_file() else GatewayFileConfig()
        spec = RunGatewaySpec.from_config(
            config,
            run_id=run_id,
            socket_path=socket_path,
            gateway_file=file_config,
            # The agent's forge tools act on the local forge even for a GitHub project: while the agent
            # runs, nothing is committed, so there is no branch to push; corral opens the GitHub pull
            # request itself at awaiting_approval, from the committed result.
            forge=RedactingForge(LocalForge(self.settings.local_forge_dir)),
            deploy=self.deploy_target(),
            repo=repo,
            head=branch,
            token_store=StateRecordedTokenStore(self.state(config), config.project.name),
            log_dir=self.settings.home / "gateway" / run_id,
        )
        return RunGateway.start(spec, sink)

    def deploy_target(self) -> DeployTarget:
        """Where runs stage and humans promote: the local deploy target under `home/deploy`."""
        from corral.deploy.local import LocalDeploy

        return LocalDeploy(self.settings.deploy_dir)

    def forge(self, config: Config) -> Forge:
        """The project's forge (`[forge] backend`): local by default, GitHub with a host-held token."""
        from corral.forge import forge_class
        from corral.forge.redacting import RedactingForge

        cls = forge_class(config.forge.backend)
        if config.forge.backend == "local":
            return RedactingForge(cls(self.settings.local_forge_dir))
        return RedactingForge(cls(config.forge, self.host_secret(config.forge.token)))

    def deployer(self, config: Config, run_id: str, repo: Path) -> Deployer:
        """The project's `[deploy]` backend; the local one builds in a sandbox of this run's project."""
        from corral.deploy import deployer_class

        section = config.deploy
        backend = section.backend if section is not None else "local"
        cls = deployer_class(backend)
        if backend == "local":
            from corral.delivery.build import SandboxBuilder

            builder = SandboxBuilder(
                repo, config, self.sandbox_backend(), run_id, self.settings.deploy_dir / "scratch"
            )
            return cls(self.settings.deploy_dir, builder)
        assert section is not None
        return cls(section, self.host_secret(section.token), self.settings.deploy_dir / backend)

    def host_secret(self, ref: str) -> str:
        """A credential corral itself uses on the host (`env:VAR` or `file:/path`); never a sandbox's."""
        from corral.errors import ConfigError

        kind, _, where = ref.partition(":")
        value = ""
        if kind == "env":
            value = os.environ.get(where, "")
        elif kind == "file":
            try:
                value = Path(where).read_text(encoding="utf-8").strip()
            except OSError:
                value = ""
        if not value:
            raise ConfigError(f"no credential at {ref!r}", hint=f"set {where} on the host running corral")
        from corral.audit.redact import MIN_SECRET_LENGTH, process_redactor

        if len(value) >= MIN_SECRET_LENGTH:  # never shown, whatever a forge or deploy API echoes back
            process_redactor().register(re.sub(r"[^A-Za-z0-9_.:-]", "_", ref)[:64], value)
        return value

    # ---- memory --------------------------------------------------------------------------------

    def preferences_for(
        self, config: Config, task: str, ids: tuple[int, ...] | None = None
    ) -> PreferenceSelection:
        """The project's most relevant active preferences for this task, rendered for the system prompt;
        with `ids`, exactly those (a replay injects what its recording was told)."""
        from corral.state import preferences

        if ids is not None:
            prefs = [preferences.get_preference(self.state(config), i) for i in ids]
        else:
            prefs = preferences.retrieve(
                self.state(config),
                config.project.name,
                task,
                preferences.likely_paths_from_text(task) or None,
            )
        if not prefs:
            return PreferenceSelection((), "")
        return PreferenceSelection(tuple(str(p.id) for p in prefs), preferences.render_prompt_section(prefs))

    def close(self) -> None:
        """Close the stores this Services opened; a run's (`for_run`) closes only its Docker client."""
        if self._owns_stores:
            self._stores.close()
            return
        docker, self._docker = self._docker, None
        if docker is not None:
            docker.close()
