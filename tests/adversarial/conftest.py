"""The adversarial battery's runs: the scripted model plays attack probes (probe.py) through the real
Claude Code in the real sandbox. Attacks that cannot interfere share a run, one Bash call per attack,
so each test id asserts on its own call's audited output; the battery costs three runs. The forged
gateway calls are MCP tool calls of the model, played before a run's Bash attacks."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.config import load_config
from corral.model.proxy import RUN_TOKEN_PREFIX
from corral.services import Services
from corral.settings import Settings
from tests.conftest import CANARY_KEY
from tests.e2e.conftest import RunResult, agent_image, docker_client, make_repo, run_task
from tests.gateway.conftest import MemorySink

__all__ = ["agent_image", "docker_client"]  # the e2e fixtures, shared with the battery

HERE = Path(__file__).parent
CANARY_HOST = "host-canary-5e1f"
CANARY_HIDDEN = "hidden-canary-8a2c"
# Constrained grants for the forged-argument probes (tool.forge_*): a denylist by regex and by
# inequality, an allowlist of one integer and of one string. Nothing else is granted.
GRANTS = {
    "forge.comment": 'forge.comment(body !~ "^/(merge|approve|deploy)")',
    "forge.open_pull_request": 'forge.open_pull_request(title != "release")',
    "forge.list_checks": "forge.list_checks(number == 1)",
    "deploy.stage": 'deploy.stage(target == "preview")',
}
CONFIG = f"""\
[sandbox]
hidden_paths = ["secret.env"]

[checks]
command = "true"

[gateway]
grants = [{", ".join(f"'{g}'" for g in GRANTS.values())}]
"""


@dataclass
class Battery:
    result: RunResult
    repo: Path
    host_marker: Path
    reports: dict[str, dict[str, Any]]
    other: LiveRun | None = None
    """The other run whose live tokens this run's probes presented (cred.other_run_token)."""


@dataclass
class LiveRun:
    run_id: str
    tokens: dict[str, str]
    token_id: str
    sockets: Path
    sink: MemorySink = field(default_factory=MemorySink)


@contextmanager
def live_run(home: Path, repo: Path) -> Iterator[LiveRun]:
    """Another run's model proxy and gateway, live while a battery run plays: started by the calls a run
    makes (`Services.start_model_proxy`, `Services.start_gateway`, a token minted as `corral.runs`
    mints it), on the same corral home and state DB, each on its own socket in its own run directory."""
    settings = Settings(home=home)
    services = Services(settings)
    config = load_config(repo)
    run_id = "adv-other-" + secrets.token_hex(4)
    sockets = settings.run_socket_dir(run_id)
    sockets.mkdir(parents=True)
    sink = MemorySink()
    token = RUN_TOKEN_PREFIX + secrets.token_urlsafe(24)
    proxy = services.start_model_proxy(config, None, sink, token, sockets / "model.sock", None)
    try:
        gateway = services.start_gateway(
            config, repo, run_id, f"corral/{run_id}", sockets / "gateway.sock", sink
        )
        try:
            yield LiveRun(run_id, {"proxy": token, "gateway": gateway.token}, gateway.token_id, sockets, sink)
        finally:
            gateway.stop()
    finally:
        proxy.stop()
        services.close()
        shutil.rmtree(sockets, ignore_errors=True)


def new_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="ca", dir="/tmp"))


def _reports(result: RunResult) -> dict[str, dict[str, Any]]:
    reports: dict[str, dict[str, Any]] = {}
    for shell in result.of("shell.command"):
        if "probe.py" not in shell.command:
            continue
        for line in shell.output.splitlines():
            if line.startswith('{"id"'):
                report = json.loads(line)
                reports[report["id"]] = report | {"command": shell.command, "exit_code": shell.exit_code}
    return reports


def play(
    tmp: Path,
    name: str,
    attacks: list[str],
    *,
    home: Path | None = None,
    files: dict[str, str] | None = None,
    tool_turns: list[list[dict[str, Any]]] | None = None,
    other: LiveRun | None = None,
) -> Iterator[Battery]:
    """One battery run: `tool_turns` (each a list of tool uses for one model turn) first, then one
    Bash call per attack. `files` go into the repository beside the probe."""
    with pytest.MonkeyPatch.context() as env:
        for var in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
            env.delenv(var, raising=False)
        env.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
        home = home or new_home()
        env.setenv("CORRAL_HOME", str(home))
        marker_dir = Path(tempfile.mkdtemp(prefix="corral-adv-host-", dir="/tmp"))
        marker = marker_dir / "mark"
        marker.write_text(CANARY_HOST + "\n")
        os.chmod(marker_dir, 0o755)
        os.chmod(marker, 0o644)  # world-readable on the host: only isolation keeps it from the agent
        files = {
            "probe.py": (HERE / "probe.py").read_text(),
            "secret.env": f"TOKEN={CANARY_HIDDEN}\n",
            "README.md": (HERE / "injection.md").read_text(),
            **(files or {}),
        }
        repo = make_repo(tmp / "repo", files, CONFIG)
        turns: list[dict[str, Any]] = [{"tool_use": uses} for uses in tool_turns or []]
        turns += [
            {"tool_use": [{"name": "Bash", "input": {"command": f"python3 probe.py {attack} {marker}"}}]}
            for attack in attacks
        ]
        turns.append({"text": "done"})
        playbook = tmp / "playbook.yaml"
        playbook.write_text(yaml.safe_dump({"turns": turns}))
        result = run_task(repo, f"adversarial battery: {name}", playbook, Settings(home=home))
        battery = Battery(result, repo, marker, _reports(result), other)
        if os.environ.get("CORRAL_BATTERY_REPORT"):  # for docs/security.md's table
            with open(os.environ["CORRAL_BATTERY_REPORT"], "a") as out:
                out.write(json.dumps({"run": name, "reports": battery.reports}) + "\n")
        yield battery
