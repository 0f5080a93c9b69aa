"""Audit fixtures: stores on SQLite, FerretDB and Postgres, a private FerretDB process, a secret to redact.

FerretDB tests use one database per test (a unique name), dropped afterwards, so runs never mix.
The store-outage test starts its OWN FerretDB (CORRAL_TEST_FERRETDB_BIN) on a free port with its own
data directory, so killing it cannot disturb other tests.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymongo
import pytest

from corral.audit.log import AuditLog
from corral.events import FileEdit, ModelRequest, ModelResponse, ShellCommand, ToolCall
from corral.settings import Settings
from tests.conftest import require_env

SECRET = "s3cr3t-T0ken-9f8e7d6c5b4a"


@pytest.fixture
def settings() -> Settings:
    return Settings()  # CORRAL_HOME comes from the root conftest: a fresh directory per test


@pytest.fixture
def mongo_url() -> Iterator[str]:
    base = require_env("CORRAL_TEST_MONGO_URL")
    name = f"corral_audit_test_{uuid.uuid4().hex[:10]}"
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(base, serverSelectionTimeoutMS=5000)
    try:
        yield base.rstrip("/") + "/" + name
    finally:
        client.drop_database(name)
        client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards (with any connection left open)."""
    admin = require_env("CORRAL_TEST_POSTGRES_URL")
    name = f"corral_audit_test_{uuid.uuid4().hex[:10]}"
    info = "postgresql://" + admin.split("://", 1)[1]
    with psycopg.connect(info, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(info, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "ferretdb", "postgres"])
def store_url(request: pytest.FixtureRequest, settings: Settings) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{settings.audit_db}"
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("mongo_url"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FerretDB:
    """A FerretDB process of our own (SQLite backend), which a test may kill and restart."""

    def __init__(self, binary: str, data: Path) -> None:
        self.binary = binary
        self.data = data
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        data.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/corral_audit"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--handler=sqlite",
                f"--sqlite-url=file:{self.data}/",
                f"--listen-addr=127.0.0.1:{self.port}",
                "--telemetry=disable",
                "--debug-addr=-",
                f"--state-dir={self.data}",  # not the working directory (the checkout)
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.data / "ferretdb.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"ferretdb did not listen on {self.port}; see {self.data}/ferretdb.log")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def own_ferretdb(tmp_path: Path) -> Iterator[FerretDB]:
    binary = require_env("CORRAL_TEST_FERRETDB_BIN")
    server = FerretDB(binary, tmp_path / "ferret")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def sample_events(n: int) -> list[object]:
    """A realistic mix: what the agent saw, decided and did."""
    out: list[object] = []
    for i in range(n):
        match i % 5:
            case 0:
                out.append(
                    ModelRequest(
                        request_model="claude-sonnet-4-5-20250929",
                        exchange_id=f"x{i}",
                        messages=i,
                        tools=3,
                        last_user=f"step {i}",
                    )
                )
            case 1:
                out.append(
                    ModelResponse(
                        request_model="claude-sonnet-4-5-20250929",
                        exchange_id=f"x{i}",
                        text="running it",
                        input_tokens=10,
                        output_tokens=5,
                    )
                )
            case 2:
                out.append(ToolCall(tool_name="Bash", tool_call_id=f"t{i}", input={"command": f"echo {i}"}))
            case 3:
                out.append(
                    ShellCommand(tool_call_id=f"t{i}", command=f"echo {i}", exit_code=0, output=str(i))
                )
            case _:
                out.append(FileEdit(tool_call_id=f"t{i}", path="app.py", diff=f"-a = {i}\n+a = {i + 1}\n"))
    return out


def record_run(audit: AuditLog, run_id: str, n: int) -> None:
    recorder = audit.for_run(run_id)
    for event in sample_events(n):
        recorder.emit(event, durable=True)  # type: ignore[type-var]
    recorder.close()


def file_bytes(root: Path) -> bytes:
    """Every byte of every file under `root` (spools, markers, SQLite database and WAL)."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())
