"""Warm sandboxes: a claimed container is as isolated as a cold one, and is never used twice.

The hardening tests of test_hardening.py run here again, unchanged, on containers claimed from a real
warm pool (the `backend` fixture below replaces conftest's): each test's sandbox was created and
self-tested before the test made its workspace, and got the workspace, read-only paths, masks and
sockets attached at claim.
"""

# ruff: noqa: F401  (the hardening tests are imported to be collected, and run, here)
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from corral.gc import pid_alive
from corral.sandbox import GVISOR_RUNTIMES, POOL_LABEL, RUN_LABEL, SandboxSpec
from corral.sandbox.docker import DockerBackend, DockerSandbox, run_self_test
from corral.sandbox.hostmount import is_mount, mount_points
from corral.sandbox.nodump import check_nodump
from corral.sandbox.warm import SLOT_LABEL, WarmBackend, WarmPool, reap_pools, status

from .conftest import READONLY_CANARY, SECRET_CANARY, spec_for
from .test_hardening import (
    sh,
    test_claude_code_runs_inside_as_the_agent,
    test_exec_timeout_and_exec_command,
    test_hidden_paths_show_no_content,
    test_no_docker_socket,
    test_no_host_environment,
    test_no_way_to_root,
    test_only_loopback_and_the_host_probe_is_unreachable,
    test_read_only_paths_refuse_writes_while_the_rest_of_the_workspace_is_writable,
    test_root_filesystem_is_read_only,
    test_socat_bridge_reaches_a_host_unix_socket,
    test_stop_ends_a_running_exec,
    test_writes_outside_the_workspace_do_not_reach_the_host,
)

pytestmark = pytest.mark.docker

FILL_TIMEOUT = 180.0


class ClaimingBackend(WarmBackend):
    """Never creates cold: every sandbox of a test here must be a claimed warm one."""

    def create(self, spec: SandboxSpec) -> DockerSandbox:
        key = self.pool.want(spec)
        assert key is not None
        assert self.pool.wait_ready(key, 1, FILL_TIMEOUT), self.pool.errors
        claimed = self.pool.claim(spec)
        assert claimed is not None and claimed.warm, self.pool.errors
        return claimed


@pytest.fixture(scope="module")
def pool(client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmPool]:
    home = tmp_path_factory.mktemp("warm-home")
    pool = WarmPool(client, size=1, home=home, owner=str(home), mask_root=home / "masks")
    pool.start()
    yield pool
    pool.close()


@pytest.fixture
def backend(pool: WarmPool, client: docker.DockerClient) -> DockerBackend:
    return ClaimingBackend(pool, client, owner=pool._backend._owner)


def test_a_claimed_container_has_the_runs_mounts_and_passes_the_runs_checks(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, pool: WarmPool
) -> None:
    sandbox = make_sandbox(workspace)
    labels = sandbox.inspect()["Config"]["Labels"]
    assert POOL_LABEL in labels and RUN_LABEL not in labels
    run_self_test(sandbox)  # what runs.py does on every agent sandbox, cold or warm
    check_nodump(sandbox)
    code, out = sh(sandbox, "cat src/app.py; cat billing/rates.py; cat secrets/prod.key 2>&1; cat .env")
    assert "print('hello')" in out and READONLY_CANARY in out and SECRET_CANARY not in out
    # Directories above protected paths are mount points of their own inside the container too, so
    # renaming one cannot carry a masked file to a path that is not masked.
    code, out = sh(sandbox, "mv conf conf2 2>&1; ls conf2 2>&1; cat conf/private.env 2>&1")
    assert code != 0 and SECRET_CANARY not in out
    code, _ = sh(sandbox, "echo changed > src/app.py")
    assert code == 0 and (workspace / "src" / "app.py").read_text() == "changed\n"


def test_a_claimed_container_is_never_handed_out_again_and_the_pool_refills(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, pool: WarmPool, client: docker.DockerClient
) -> None:
    first = make_sandbox(workspace)
    (workspace / "left-behind").write_text("planted by the previous run\n")
    first_id, slot = first.id, first.slot.directory  # type: ignore[attr-defined]
    assert is_mount(slot / "workspace")
    first.remove()
    # Its container and its slot are gone for good, and the worktree was only ever mounted there.
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(first_id)
    assert not slot.exists() and not any(point.startswith(str(slot)) for point in mount_points())
    assert (workspace / "left-behind").exists()
    key = pool.want(spec_for(workspace, first.spec.image))
    assert key is not None and pool.wait_ready(key, 1, FILL_TIMEOUT), pool.errors
    second = make_sandbox(workspace)
    assert second.id != first_id and second.slot.directory != slot  # type: ignore[attr-defined]
    assert pool.claimed >= 2 and pool.created >= pool.claimed
    report = status(pool)
    assert report.size == 1 and report.claimed == pool.claimed
    assert set(report.ready) == {f"agent@{key.image_id[7:19]}"}


def test_a_container_that_changed_since_its_fill_is_not_claimed(
    client: docker.DockerClient, workspace: Path, agent_image: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    pool = WarmPool(client, size=1, home=home, owner=str(home), mask_root=home / "masks")
    pool.start()
    try:
        spec = spec_for(workspace, agent_image)
        key = pool.want(spec)
        assert key is not None and pool.wait_ready(key, 1, FILL_TIMEOUT), pool.errors
        mine = {"label": [f"{POOL_LABEL}={key.digest}", f"io.corral.owner={home}"]}
        (pooled,) = client.containers.list(filters=mine, all=True)
        pooled.restart(timeout=0)  # a restarted container's bridges and self-test are not the ones tested
        assert pool.claim(spec) is None
        assert "restarted since it was filled" in pool.errors[-1]
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(pooled.id)
    finally:
        pool.close()
    assert not client.containers.list(all=True, filters={"label": [SLOT_LABEL, f"io.corral.owner={home}"]})


def test_close_removes_the_pool_and_gc_reaps_a_dead_process_pool(
    client: docker.DockerClient, workspace: Path, agent_image: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    owner = {"label": [POOL_LABEL, f"io.corral.owner={home}"]}
    pool = WarmPool(client, size=2, home=home, owner=str(home), mask_root=home / "masks")
    pool.start()
    key = pool.want(spec_for(workspace, agent_image))
    assert key is not None and pool.wait_ready(key, 2, FILL_TIMEOUT), pool.errors
    assert len(client.containers.list(all=True, filters=owner)) == 2
    # While its process lives, gc leaves a pool alone; once the process is gone, gc removes it all.
    assert reap_pools(client, str(home), home, pid_alive) == []
    assert len(reap_pools(client, str(home), home, lambda pid: False)) == 2
    assert client.containers.list(all=True, filters=owner) == []
    assert not [p for p in (home / "warm").iterdir()]
    pool.close()
    pool2 = WarmPool(client, size=1, home=home, owner=str(home), mask_root=home / "masks")
    pool2.start()
    assert pool2.want(spec_for(workspace, agent_image)) == key and pool2.wait_ready(key, 1, FILL_TIMEOUT)
    assert len(client.containers.list(all=True, filters=owner)) == 1
    pool2.close()
    assert client.containers.list(all=True, filters=owner) == []
    assert not is_mount(pool2.root) and not is_mount(pool2.stage)


@pytest.mark.parametrize("runtime", GVISOR_RUNTIMES)
def test_a_gvisor_sandbox_is_never_pooled_so_its_run_starts_cold(
    client: docker.DockerClient, workspace: Path, agent_image: str, tmp_path: Path, runtime: str
) -> None:
    """gVisor's file layer does not see a mount added after the sandbox started, so a pooled container
    could never get the run's workspace: the pool takes no such spec, and makes nothing for it."""
    home = tmp_path / "home"
    pool = WarmPool(client, size=1, home=home, owner=str(home), mask_root=home / "masks")
    pool.start()
    try:
        assert pool.want(spec_for(workspace, agent_image, runtime=runtime)) is None
        assert pool.claim(spec_for(workspace, agent_image, runtime=runtime), client) is None
        assert (
            client.containers.list(all=True, filters={"label": [POOL_LABEL, f"io.corral.owner={home}"]}) == []
        )
    finally:
        pool.close()
