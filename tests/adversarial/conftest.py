"""The adversarial battery's runs: the scripted model plays attack probes (probe.py) through the real
Claude Code in the real sandbox. Attacks that cannot interfere share a run, one Bash call per attack,
so each test id asserts on its own call's audited output; the battery costs three runs."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.settings import Settings
from tests.conftest import CANARY_KEY
from tests.e2e.conftest import RunResult, agent_image, docker_client, make_repo, run_task

__all__ = ["agent_image", "docker_client"]  # the e2e fixtures, shared with the battery

HERE = Path(__file__).parent
CANARY_HOST = "host-canary-5e1f"
CANARY_HIDDEN = "hidden-canary-8a2c"
CONFIG = """\
[sandbox]
hidden_paths = ["secret.env"]

[checks]
command = "true"
"""


@dataclass
class Battery:
    result: RunResult
    repo: Path
    host_marker: Path
    reports: dict[str, dict[str, Any]]


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


def play(tmp: Path, name: str, attacks: list[str]) -> Iterator[Battery]:
    with pytest.MonkeyPatch.context() as env:
        for var in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
            env.delenv(var, raising=False)
        env.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
        home = Path(tempfile.mkdtemp(prefix="ca", dir="/tmp"))
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
        }
        repo = make_repo(tmp / "repo", files, CONFIG)
        turns: list[dict[str, Any]] = [
            {"tool_use": [{"name": "Bash", "input": {"command": f"python3 probe.py {attack} {marker}"}}]}
            for attack in attacks
        ]
        turns.append({"text": "done"})
        playbook = tmp / "playbook.yaml"
        playbook.write_text(yaml.safe_dump({"turns": turns}))
        result = run_task(repo, f"adversarial battery: {name}", playbook, Settings(home=home))
        battery = Battery(result, repo, marker, _reports(result))
        if os.environ.get("CORRAL_BATTERY_REPORT"):  # for docs/security.md's table
            with open(os.environ["CORRAL_BATTERY_REPORT"], "a") as out:
                out.write(json.dumps({"run": name, "reports": battery.reports}) + "\n")
        yield battery
