"""Incident test fixtures: the vendors' HTTPS fakes and a run gateway in front of one incident upstream."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.forge.local import LocalForge
from corral.gateway.config import GatewayFileConfig, UpstreamConfig
from corral.gateway.run import RunGateway, RunGatewayHandle, RunGatewaySpec
from corral.incident.fakes import FakeApi, make_tls
from tests.gateway.conftest import MemorySink, anyio_backend, npm_dir, sink, sock

__all__ = ["anyio_backend", "sink", "sock"]
FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "incident-canary-41c2"


def npm_entry(relative: str) -> Path:
    entry = npm_dir() / "node_modules" / relative
    if not entry.is_file():
        pytest.fail(f"{entry} is missing: run `source .ci/services.sh && install_npm_mcp`")
    return entry


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[Callable[[str], FakeApi]]:
    started: list[FakeApi] = []

    def _start(vendor: str) -> FakeApi:
        fixtures = json.loads((FIXTURES / f"{vendor}.json").read_text(encoding="utf-8"))
        api = FakeApi(fixtures, make_tls(tmp_path / f"tls-{vendor}")).start()
        started.append(api)
        return api

    yield _start
    for api in started:
        api.stop()


@pytest.fixture
def incident_gateway(
    sock: Path, sink: MemorySink, tmp_path: Path
) -> Iterator[Callable[[str, UpstreamConfig, tuple[str, ...]], RunGatewayHandle]]:
    """A run gateway whose only upstream is `name`, its `read` tools classed read, granted `name.*:read`;
    the upstream's env may use `${secret:INCIDENT_TOKEN}` (a canary value)."""
    handles: list[RunGatewayHandle] = []

    def _start(name: str, upstream: UpstreamConfig, read: tuple[str, ...]) -> RunGatewayHandle:
        config = GatewayFileConfig(
            upstreams={name: upstream}, annotations={f"{name}.{t}": "read" for t in read}
        )
        spec = RunGatewaySpec(
            "run-inc",
            [f"{name}.*:read"],
            sock,
            config=config,
            secret_refs={"INCIDENT_TOKEN": "env:CORRAL_TEST_INCIDENT_TOKEN"},
            environ={"CORRAL_TEST_INCIDENT_TOKEN": TOKEN},
            forge=LocalForge(tmp_path / "forge"),
        )
        handle = RunGateway.start(spec, sink)
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()
