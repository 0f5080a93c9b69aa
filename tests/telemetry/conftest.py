"""The e2e fixtures (the real Docker Engine and agent image), shared with the trace export tests."""

from __future__ import annotations

from tests.e2e.conftest import agent_image, docker_client

__all__ = ["agent_image", "docker_client"]
