"""The audit store is down when a real run starts (tests/e2e/test_audit_outage.py kills it mid-run):
the run says so, records every event in the local spool, finishes, and once the store is back the
backlog ships whole, the chain verifies, and nothing is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymongo
import pytest

from corral.audit.spool import list_spools
from corral.settings import Settings
from tests.audit.conftest import FerretDB
from tests.conftest import require_env
from tests.e2e.conftest import leftovers, make_repo

pytestmark = [pytest.mark.docker, pytest.mark.ferretdb]

PLAYBOOK = """\
turns:
  - tool_use: [{name: Bash, input: {command: "echo offline > {workspace}/out.txt"}}]
  - text: done
"""


def test_a_run_started_while_the_store_is_down_spools_and_ships_later(
    agent_image: str, docker_client: Any, tmp_path: Path
) -> None:
    ferret = FerretDB(require_env("CORRAL_TEST_FERRETDB_BIN"), tmp_path / "ferret")  # not started
    url = ferret.url + "?serverSelectionTimeoutMS=500&connectTimeoutMS=500"
    env = {**os.environ, "CORRAL_AUDIT_URL": url}
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, "[checks]\ncommand = 'true'\n")
    (tmp_path / "p.yaml").write_text(PLAYBOOK)
    run = subprocess.run(
        [sys.executable, "-m", "corral", "run", "offline", "--repo", str(repo),
         "--playbook", str(tmp_path / "p.yaml"), "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"audit store {url} is unavailable" in run.stderr
    assert "events stay in the local spool until it is back" in run.stderr
    streamed = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"kind"')]
    run_id = streamed[0]["run_id"]
    assert streamed[-1]["kind"] == "run.finished" and streamed[-1]["phase"] == "awaiting_approval"
    settings = Settings()
    assert list_spools(settings.spool_dir, run_id), "the events wait in the spool"
    assert leftovers(docker_client, settings, run_id) == []

    ferret.start()
    try:
        verify = subprocess.run(
            [sys.executable, "-m", "corral", "audit", "verify", run_id, "--strict", "--json"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(ferret.url)
        try:
            events = client.get_default_database()["events"]
            stored = sorted(doc["seq"] for doc in events.find({"run_id": run_id}))
        finally:
            client.close()
    finally:
        ferret.kill()
    assert stored == [e["seq"] for e in streamed] == list(range(1, len(streamed) + 1))
    assert list_spools(settings.spool_dir, run_id) == []
