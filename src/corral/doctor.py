"""`corral doctor`: is everything a run needs here, and if not, what to do."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.config import Config, load_config
from corral.errors import CorralError
from corral.services import Services

if TYPE_CHECKING:
    from docker import DockerClient


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _bundled_claude_version() -> str:
    from claude_agent_sdk._cli_version import __cli_version__

    return str(__cli_version__)


GVISOR_ARGS = ["--platform=ptrace", "--network=none", "--host-uds=open"]
"""The runtimeArgs of every gVisor entry in daemon.json: no netstack beyond loopback, host unix sockets."""


def runsc_entry(path: str) -> dict[str, Any]:
    """The daemon.json entry that registers the gVisor at `path` as the runtime `runsc` sandboxes use."""
    from corral.sandbox import DOCKER_RUNTIMES

    return {"runtimes": {DOCKER_RUNTIMES["runsc"]: {"path": path, "runtimeArgs": GVISOR_ARGS}}}


def runtime_check(runtimes: dict[str, Any], configured: str, runsc_path: str | None) -> Check:
    """Is the gVisor corral uses registered with Docker, and is the runtime the sandboxes use there?

    `runsc_path` is Debian's runsc, if installed. It is not the one `runtime = "runsc"` uses: under it
    Claude Code's non-dumpable flag does not hold (docs/security.md, "Kernel isolation").
    """
    from corral.sandbox import DOCKER_RUNTIMES, resolve_runtime

    try:
        runtime = resolve_runtime(configured)
    except CorralError as exc:
        return Check("runtime", False, exc.message, exc.hint or "")
    name = DOCKER_RUNTIMES["runsc"]
    entry = runtimes.get(name)
    gvisor = f"{name} ({entry.get('path', '?')}) registered" if entry else f"{name} not registered"
    debian = f"Debian's runsc at {runsc_path}" if runsc_path else "Debian's runsc not installed"
    detail = f"sandboxes use {runtime} ({DOCKER_RUNTIMES[runtime]}); {gvisor} with Docker; {debian}"
    fix = ""
    if entry is None:
        fix = (
            "`make gvisor` in corral's checkout builds gVisor from the Go module proxy and registers it"
            f" as {name};"
            f" or add a gVisor newer than Debian's 20221219 to /etc/docker/daemon.json:"
            f" {json.dumps(runsc_entry('/path/to/runsc'))}"
            " and restart the daemon (systemctl restart docker, or SIGHUP to dockerd reloads runtimes)"
        )
    return Check("runtime", DOCKER_RUNTIMES[runtime] in runtimes, detail, fix)


def _image_checks(client: DockerClient, config: Config, repo: Path) -> list[Check]:
    """The sandbox image: built and carrying the pin; for a `[sandbox.image]` recipe, built and current."""
    from corral.sandbox.images import agent_tag, find_image, image_claude_code
    from corral.sandbox.project_image import has_recipe, image_status

    image = config.sandbox.image_name or agent_tag(config.agent.claude_code)
    found = find_image(client, image)
    label = image_claude_code(found) if found is not None else None
    if found is None:
        checks = [Check("image", False, f"{image} is not built", "corral image build")]
    else:
        checks = [
            Check(
                "image",
                label == config.agent.claude_code,
                f"{image} carries Claude Code {label}",
                "corral image build --force",
            )
        ]
    if has_recipe(config) and found is not None:
        try:
            current, detail = image_status(client, config, repo)
        except CorralError as exc:
            current, detail = False, exc.message
        checks.append(Check("project image", current, detail, f"corral image build --repo {repo}"))
    return checks


def run_checks(services: Services, repo: Path) -> list[Check]:
    checks: list[Check] = []
    try:
        config = load_config(repo.resolve())
        checks.append(Check("config", True, f"{repo.resolve() / 'corral.toml'} (or defaults)"))
    except CorralError as exc:
        return [Check("config", False, exc.message, exc.hint or "")]

    bundled = _bundled_claude_version()
    checks.append(
        Check(
            "claude code",
            bundled == config.agent.claude_code,
            f"pinned {config.agent.claude_code}, claude-agent-sdk bundles {bundled}",
            "set [agent].claude_code to the bundled version, "
            "or install the claude-agent-sdk that bundles the pin",
        )
    )
    try:
        client = services.docker()
        version = client.version().get("Version", "?")
        checks.append(Check("docker", True, f"Docker Engine {version}"))
        checks.append(
            runtime_check(client.info().get("Runtimes", {}), config.sandbox.runtime, shutil.which("runsc"))
        )
        checks.extend(_image_checks(client, config, repo.resolve()))
    except CorralError as exc:
        checks.append(Check("docker", False, exc.message, exc.hint or ""))

    try:
        state = services.state(config)
        info = state.describe()
        checks.append(
            Check("state", True, f"{info.backend} {info.url} (team {info.team}), migration {info.revision}")
        )
    except CorralError as exc:
        checks.append(Check("state", False, exc.message, exc.hint or ""))

    try:
        audit = services.audit(config)
        status = audit.status()
        checks.append(
            Check(
                "audit",
                status.reachable,
                f"{status.description}; spool backlog {status.backlog} events",
                ""
                if status.reachable
                else "check [stores].audit_url / CORRAL_AUDIT_URL; events wait in the spool",
            )
        )
    except CorralError as exc:
        checks.append(Check("audit", False, exc.message, exc.hint or ""))

    key = (
        "set (used only by the host proxy)"
        if os.environ.get("ANTHROPIC_API_KEY")
        else "not set: the scripted model is used"
    )
    checks.append(Check("model key", True, f"ANTHROPIC_API_KEY {key}"))
    services.close()
    return checks
