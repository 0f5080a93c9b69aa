"""Fixtures every test gets: an isolated corral home and canary model credentials.

No test ever inherits ANTHROPIC_* from the environment it runs in: the canary key set here is what the
host proxy sees, and tests assert it never crosses into a container, a file or an event. Nor OTEL_*: a
test exports traces only where it says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CANARY_KEY = "sk-ant-canary-3f9c1e7d5b2a4c6e8f0a1b3d5c7e9f1a"


def pytest_configure(config: pytest.Config) -> None:
    # A test suite started in the background by a non-interactive shell (`make test &`, a CI runner)
    # inherits SIGINT ignored, and so would every corral it starts: Python keeps an ignored SIGINT,
    # as a background job should. The Ctrl-C tests would then send a signal nobody hears. A caught
    # SIGINT here is reset to the default at exec, so each corral installs its own Ctrl-C handler.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def require_env(name: str) -> str:
    """The value of a service variable set by .ci/services.sh; skip without it, fail in CI."""
    value = os.environ.get(name)
    if value:
        return value
    message = f"{name} is not set: run `source .ci/services.sh && services_up` first"
    if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "OTEL_")) or name in {
            "CLAUDE_CODE_OAUTH_TOKEN",
            "CORRAL_STATE_URL",
            "CORRAL_AUDIT_URL",
        }:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
    # Short on purpose: per-run unix socket paths live under the home and must fit in 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="ch", dir="/tmp"))
    monkeypatch.setenv("CORRAL_HOME", str(home))
    yield home
    shutil.rmtree(home, ignore_errors=True)
