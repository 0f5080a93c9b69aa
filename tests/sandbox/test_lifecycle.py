"""Container lifecycle, failing closed, and image checks against the real Docker Engine."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import pytest

from corral.errors import EgressError, SandboxError
from corral.sandbox import RUN_LABEL
from corral.sandbox.docker import DockerBackend, DockerSandbox, run_self_test, start_host_probe
from corral.sandbox.images import (
    BASE_IMAGE,
    build_agent_image,
    docker_client,
    ensure_images,
    image_claude_version,
)

from .conftest import PIN, new_run_id, spec_for

pytestmark = pytest.mark.docker


def _labelled(client: docker.DockerClient, run_id: str) -> list[str]:
    return [c.id for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})]


def test_orphans_lists_dead_runs_and_remove_container_removes_them(
    backend: DockerBackend,
    client: docker.DockerClient,
    make_sandbox: Callable[..., DockerSandbox],
    workspace: Path,
) -> None:
    sandbox = make_sandbox(workspace)
    run_id = sandbox.spec.run_id
    assert sandbox.mask_dir.is_dir()  # holds the empty files over hidden files
    assert sandbox.id in backend.orphans(set())
    assert sandbox.id not in backend.orphans({run_id})
    # Another corral home (another owner) never judges, or removes, this home's containers.
    assert sandbox.id not in DockerBackend(client, owner="/some/other/home").orphans(set())
    backend.remove_container(sandbox.id)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(sandbox.id)
    assert not sandbox.mask_dir.exists()
    assert sandbox.id not in backend.orphans(set())
    backend.remove_container(sandbox.id)  # already gone: fine


def test_remove_and_stop_are_idempotent(make_sandbox: Callable[..., DockerSandbox], workspace: Path) -> None:
    sandbox = make_sandbox(workspace)
    sandbox.stop()
    sandbox.remove()
    sandbox.remove()
    sandbox.stop()
    with pytest.raises(SandboxError):
        sandbox.exec(["true"])


def test_missing_image_fails_with_a_hint_and_leaves_nothing(
    backend: DockerBackend, client: docker.DockerClient, workspace: Path
) -> None:
    spec = spec_for(workspace, "corral/does-not-exist:1")
    with pytest.raises(SandboxError) as caught:
        backend.create(spec)
    assert "corral image build" in str(caught.value)
    assert _labelled(client, spec.run_id) == []


def test_a_link_in_a_protected_path_is_refused(
    backend: DockerBackend, client: docker.DockerClient, workspace: Path, agent_image: str
) -> None:
    # A link would make Docker bind the host file it points at into the container.
    (workspace / "config.yaml").unlink()
    os.symlink("/etc/shadow", workspace / "config.yaml")
    spec = spec_for(workspace, agent_image)
    with pytest.raises(SandboxError, match="symbolic link"):
        backend.create(spec)
    assert _labelled(client, spec.run_id) == []


def _wrap_plain_container(
    client: docker.DockerClient, agent_image: str, workspace: Path, **kwargs: object
) -> DockerSandbox:
    """A deliberately unhardened container, to prove the self-test can fail."""
    spec = spec_for(workspace, agent_image)
    container = client.containers.run(
        agent_image, ["sleep", "infinity"], detach=True, labels={RUN_LABEL: spec.run_id}, **kwargs
    )
    return DockerSandbox(client, container, spec, workspace.parent / "unused-masks")


def test_self_test_fails_closed_on_a_container_with_a_network(
    client: docker.DockerClient, agent_image: str, workspace: Path
) -> None:
    sandbox = _wrap_plain_container(client, agent_image, workspace, network_mode="bridge")
    try:
        with pytest.raises(EgressError, match="interfaces besides loopback"):
            run_self_test(sandbox)
    finally:
        sandbox.remove()


def test_self_test_fails_closed_when_the_host_probe_is_reached(
    client: docker.DockerClient, agent_image: str, workspace: Path
) -> None:
    # Sharing the host's network namespace makes the host's 127.0.0.1 probe reachable.
    sandbox = _wrap_plain_container(client, agent_image, workspace, network_mode="host")
    try:
        probe = start_host_probe()
        report = sandbox.self_test(probe.port)
        seen = probe.stop()
        assert not report.passed
        assert report.host_probe == "connected"
        assert seen == 1
        with pytest.raises(EgressError, match="host probe saw 1 connection"):
            run_self_test(sandbox)
    finally:
        sandbox.remove()


def test_team_image_missing_or_mislabelled(client: docker.DockerClient, agent_image: str) -> None:
    with pytest.raises(SandboxError) as caught:
        ensure_images(client, PIN, "acme/agent:missing")
    message = str(caught.value)
    assert "acme/agent:missing" in message and "[sandbox].image" in message and BASE_IMAGE in message

    tag = f"corral-test/team:{new_run_id()}"
    dockerfile = f"FROM {BASE_IMAGE}\nLABEL io.corral.claude-code=0.0.1\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    try:
        assert image_claude_version(client, tag) == "0.0.1"
        with pytest.raises(SandboxError, match=f"carries Claude Code 0.0.1 but .* pins {PIN}"):
            ensure_images(client, PIN, tag)
    finally:
        client.images.remove(tag, force=True)
    assert image_claude_version(client, tag) is None


def test_our_image_is_reused_and_a_foreign_pin_is_refused(
    client: docker.DockerClient, agent_image: str
) -> None:
    assert ensure_images(client, PIN, agent_image) == client.images.get(agent_image).id
    with pytest.raises(SandboxError, match=f"bundles Claude Code {PIN}, but .* pins 9.9.9"):
        build_agent_image(client, "9.9.9")
    with pytest.raises(SandboxError, match="names another Claude Code"):
        ensure_images(client, PIN, "corral/agent:cc-9.9.9")


def test_a_bridge_that_cannot_start_fails_fast_and_leaves_nothing(
    backend: DockerBackend, client: docker.DockerClient, workspace: Path, tmp_path: Path, agent_image: str
) -> None:
    # The bare base image has no socat: the bridge dies at once and create() must say so.
    socket_dir = tmp_path / "s"
    socket_dir.mkdir(mode=0o755)
    spec = spec_for(workspace, BASE_IMAGE, socket_dir=socket_dir, bridges={18080: "model.sock"})
    with pytest.raises(SandboxError, match=r"socket bridges .* did not start"):
        backend.create(spec)
    assert _labelled(client, spec.run_id) == []


def test_sweep_masks_removes_only_directories_without_a_container(
    backend: DockerBackend, make_sandbox: Callable[..., DockerSandbox], workspace: Path, tmp_path: Path
) -> None:
    live = make_sandbox(workspace)
    stale = tmp_path / "masks" / "corral-gone-agent-000000"
    stale.mkdir(parents=True)
    fresh = tmp_path / "masks" / "corral-starting-agent-111111"
    fresh.mkdir()
    os.utime(stale, (0, 0))
    os.utime(live.mask_dir, (0, 0))
    assert backend.sweep_masks() == [stale]
    assert live.mask_dir.is_dir() and fresh.is_dir() and not stale.exists()


def test_a_long_silent_exec_outlives_the_client_request_timeout(
    workspace: Path, tmp_path: Path, agent_image: str
) -> None:
    # A test suite may print nothing for longer than the SDK's request timeout; exec must wait.
    impatient = DockerBackend(docker_client(timeout=3), mask_root=tmp_path / "m2")
    sandbox = impatient.create(spec_for(workspace, agent_image, readonly_paths=(), hidden_paths=()))
    try:
        result = sandbox.exec(["sh", "-c", "sleep 5; echo finished"])
        assert (result.exit_code, result.output) == (0, "finished\n")
    finally:
        sandbox.remove()
