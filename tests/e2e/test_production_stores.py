"""The production configuration end to end: state in Postgres, the audit log in a MongoDB server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from corral.services import Services
from tests.conftest import require_env
from tests.e2e.conftest import make_repo, run_task

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.ferretdb]


@pytest.fixture
def postgres_state_url() -> Iterator[str]:
    admin_url = require_env("CORRAL_TEST_POSTGRES_URL")
    name = f"corral_e2e_{secrets.token_hex(4)}"
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_demo_on_postgres_and_ferretdb(
    agent_image: str, tmp_path: Path, postgres_state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo = require_env("CORRAL_TEST_MONGO_URL").rstrip("/") + f"/corral_e2e_{secrets.token_hex(4)}"
    monkeypatch.setenv("CORRAL_STATE_URL", postgres_state_url)
    monkeypatch.setenv("CORRAL_AUDIT_URL", mongo)
    repo = make_repo(tmp_path / "demo", DEMO_FILES, DEMO_CONFIG)
    result = run_task(repo, DEMO_TASK, demo_playbook_path())
    assert result.record.phase == "awaiting_approval", result.record.failure_reason

    services = Services(result.settings)
    try:
        info = services.state().describe()
        assert info.backend == "postgresql" and info.revision == info.head
        assert services.state().get_run(result.run_id).checks_passed is True
        audit = services.audit()
        assert audit.online and audit.url == mongo
        assert audit.verify(result.run_id).ok
        kinds = [e.kind for e in audit.read(result.run_id)]
    finally:
        services.close()
    assert kinds.count("shell.command") == 2 and kinds.count("file.edit") == 1
    assert kinds[-1] == "run.finished"
