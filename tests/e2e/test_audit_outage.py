"""The audit store goes down in the middle of a real run: the run finishes on the spool, and once the
store is back corral ships the backlog with nothing lost and nothing duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymongo
import pytest

from tests.audit.conftest import FerretDB
from tests.conftest import require_env
from tests.e2e.conftest import make_repo

pytestmark = [pytest.mark.docker, pytest.mark.ferretdb]

PLAYBOOK = """\
turns:
  - tool_use: [{name: Bash, input: {command: "echo before"}}]
  - tool_use: [{name: Bash, input: {command: "python3 -c 'import time; time.sleep(4)'"}}]
  - tool_use: [{name: Bash, input: {command: "echo after"}}]
  - text: done
"""


def test_store_outage_mid_run_loses_nothing(agent_image: str, tmp_path: Path) -> None:
    ferret = FerretDB(require_env("CORRAL_TEST_FERRETDB_BIN"), tmp_path / "ferret")
    ferret.start()
    env = {
        **os.environ,
        "CORRAL_AUDIT_URL": ferret.url + "?serverSelectionTimeoutMS=500&connectTimeoutMS=500",
    }
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, "[checks]\ncommand = 'true'\n")
    (tmp_path / "p.yaml").write_text(PLAYBOOK)
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "run", "outage", "--repo", str(repo),
         "--playbook", str(tmp_path / "p.yaml"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    streamed: list[dict[str, Any]] = []
    try:
        for line in proc.stdout:
            if not line.startswith('{"kind"'):
                continue
            streamed.append(json.loads(line))
            if streamed[-1]["kind"] == "tool.call" and "sleep(4)" in streamed[-1]["input"]["command"]:
                ferret.kill()  # the store dies while the agent's tool is running
        proc.wait(120)
    finally:
        ferret.kill()
    assert proc.returncode == 0
    run_id = streamed[0]["run_id"]
    assert streamed[-1]["kind"] == "run.finished" and streamed[-1]["phase"] == "awaiting_approval"

    ferret.start()
    verify = subprocess.run(
        [sys.executable, "-m", "corral", "audit", "verify", run_id, "--strict", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(ferret.url)
    try:
        stored = sorted(
            doc["seq"] for doc in client.get_default_database()["events"].find({"run_id": run_id})
        )
    finally:
        client.close()
        ferret.kill()
    assert stored == [e["seq"] for e in streamed] == list(range(1, len(streamed) + 1))
