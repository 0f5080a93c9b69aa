"""Pure parts of the sandbox layer, without Docker: apt sources, mount plans, the bridge script."""

from __future__ import annotations

import os
from pathlib import Path

import docker.errors
import pytest

from corral.errors import SandboxError
from corral.paths import PathRules
from corral.sandbox import SOCKETS_IN_CONTAINER, SandboxSpec
from corral.sandbox.docker import DockerSandbox, bridge_script
from corral.sandbox.images import build_base_image, docker_client, host_apt_mirror
from corral.sandbox.mounts import find_on_disk, plan_mounts, resolve_patterns


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.internal/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.internal/debian-security\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb http://nope/debian bookworm main\n")
    assert host_apt_mirror(tmp_path) == "http://mirror.internal/debian"


def test_mirror_from_one_line_sources_of_another_release(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/x.gpg] http://vendor.example/apt nodistro main\n"
        "deb http://mirror.lan/debian trixie main\n"
    )
    assert host_apt_mirror(tmp_path) == "http://mirror.lan/debian"


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="no Debian archive"):
        host_apt_mirror(tmp_path)


def _tree(root: Path) -> Path:
    for rel in (
        "billing/sub/a.py",
        "secrets/k",
        "secrets/inner/ro.txt",
        "conf/pub.yaml",
        "conf/priv.env",
        "x.pem",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / ".git").write_text("gitdir: /elsewhere\n")
    return root


def test_patterns_resolve_to_outermost_existing_paths(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    assert resolve_patterns(ws, ["billing/**", "billing/sub/**", "missing/**", "*.pem"]) == [
        "billing",
        "x.pem",
    ]
    with pytest.raises(SandboxError, match="whole workspace"):
        resolve_patterns(ws, ["**"])


def test_plan_masks_hidden_paths_and_drops_mounts_inside_hidden_dirs(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    (tmp_path / "sockets").mkdir(mode=0o755)
    spec = SandboxSpec(
        run_id="r",
        image="i",
        workspace=ws,
        readonly_paths=("billing/**", "conf/**", "secrets/inner/**"),
        hidden_paths=("secrets/**", "conf/priv.env"),
        socket_dir=tmp_path / "sockets",
    )
    plan = plan_mounts(spec, tmp_path / "masks")
    assert plan.readonly == [".git", "billing", "conf"]  # secrets/inner would show through the mask
    assert plan.hidden == ["conf/priv.env", "secrets"]
    assert "mode=0000" in plan.tmpfs["/workspace/secrets"] and "ro" in plan.tmpfs["/workspace/secrets"]
    binds = {m["Target"]: m for m in plan.mounts}
    mask = Path(binds["/workspace/conf/priv.env"]["Source"])
    assert mask.parent == tmp_path / "masks" and mask.stat().st_size == 0
    assert os.stat(mask).st_mode & 0o777 == 0
    assert binds["/workspace/conf/priv.env"]["ReadOnly"] is True
    assert binds["/workspace/.git"]["ReadOnly"] is True
    assert binds["/workspace"]["ReadOnly"] is False
    assert binds[SOCKETS_IN_CONTAINER]["ReadOnly"] is True


def test_a_link_escaping_the_workspace_is_refused(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    os.symlink(tmp_path, ws / "billing" / "escape")
    os.symlink("/nonexistent", ws / "dangling.env")
    with pytest.raises(SandboxError, match="symbolic link"):
        resolve_patterns(ws, ["billing/escape"])
    with pytest.raises(SandboxError, match="symbolic link"):
        resolve_patterns(ws, ["*.env"])


def test_bridge_script_rejects_odd_socket_names_and_ports() -> None:
    script = bridge_script({18080: "model.sock"})
    assert "TCP-LISTEN:18080,bind=127.0.0.1,fork,reuseaddr" in script
    assert "0100007F:46A0 00000000:0000 0A" in script
    with pytest.raises(SandboxError, match="plain file name"):
        bridge_script({18080: "../x,fork"})
    with pytest.raises(SandboxError, match="not a TCP port"):
        bridge_script({70000: "model.sock"})


def test_a_clone_git_dir_is_masked_when_paths_are_hidden(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".git" / "objects").mkdir(parents=True)
    (ws / ".env").write_text("x")
    hiding = plan_mounts(
        SandboxSpec(run_id="r", image="i", workspace=ws, hidden_paths=(".env",)), tmp_path / "m"
    )
    assert ".git" in hiding.hidden and ".git" not in hiding.readonly
    assert "mode=0000" in hiding.tmpfs["/workspace/.git"]
    plain = plan_mounts(SandboxSpec(run_id="r", image="i", workspace=ws), tmp_path / "m")
    assert plain.readonly == [".git"] and plain.hidden == []


def test_an_unreachable_engine_is_a_sandbox_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(SandboxError) as caught:
        docker_client()
    assert "Docker Engine is not running" in caught.value.message
    assert caught.value.hint is not None and "corral doctor" in caught.value.hint


def test_a_probe_port_that_is_a_bridge_port_fails_closed(tmp_path: Path) -> None:
    spec = SandboxSpec(run_id="r", image="i", workspace=tmp_path, bridges={40000: "model.sock"})
    report = DockerSandbox(None, None, spec, tmp_path).self_test(40000)  # type: ignore[arg-type]
    assert not report.passed and "also a bridge port" in report.detail


class _NoImages:
    """A client stand-in whose engine has no image at all (so nothing is reused)."""

    class images:
        @staticmethod
        def get(name: str) -> None:
            raise docker.errors.ImageNotFound(name)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first for other users")
def test_a_mirror_with_credentials_is_never_baked_into_the_base(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="credentials in its URL"):
        build_base_image(_NoImages(), mirror="http://user:s3cret@mirror.lan/debian")  # type: ignore[arg-type]


def test_a_glob_without_a_slash_is_found_at_every_depth(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    (ws / "certs" / "deep").mkdir(parents=True)
    (ws / "certs" / "deep" / "server.pem").write_text("k")
    (ws / "certs" / "server.pem.txt").write_text("not a key")
    assert resolve_patterns(ws, ["*.pem"]) == ["certs/deep/server.pem", "x.pem"]
    assert resolve_patterns(ws, ["certs/*.pem"]) == []  # `*` does not cross `/`
    assert resolve_patterns(ws, ["certs/**/*.pem"]) == ["certs/deep/server.pem"]
    assert resolve_patterns(ws, ["secrets/"]) == ["secrets"]
    assert resolve_patterns(ws, []) == []


def test_a_bad_pattern_is_a_sandbox_error_naming_the_key(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    with pytest.raises(SandboxError, match="hidden_paths: pattern '!x' is a negation"):
        plan_mounts(SandboxSpec(run_id="r", image="i", workspace=ws, hidden_paths=("!x",)), tmp_path / "m")


def test_directories_above_protected_paths_are_mount_points_of_their_own(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    (ws / "app" / "billing").mkdir(parents=True)
    (ws / "app" / "billing" / "rates.py").write_text("x")
    (ws / "app" / "conf").mkdir()
    (ws / "app" / "conf" / "secret.env").write_text("s")
    spec = SandboxSpec(
        run_id="r",
        image="i",
        workspace=ws,
        readonly_paths=("app/billing/**", "billing/**"),
        hidden_paths=("app/conf/secret.env", "billing/sub/a.py", "secrets/**"),
    )
    plan = plan_mounts(spec, tmp_path / "m")
    # Not billing (already a mount), nor billing/sub (inside a read-only mount: a writable bind
    # there would make it writable), nor anything inside the hidden `secrets`.
    assert plan.anchored == ["app", "app/conf"]
    binds = {m["Target"]: m for m in plan.mounts}
    for path in plan.anchored:
        assert binds[f"/workspace/{path}"]["Source"] == str((ws / path).resolve())
        assert binds[f"/workspace/{path}"]["ReadOnly"] is False
    assert binds["/workspace/billing/sub/a.py"]["ReadOnly"] is True


def test_a_protected_path_of_the_base_commit_that_is_gone_fails_closed(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    spec = SandboxSpec(
        run_id="r",
        image="i",
        workspace=ws,
        hidden_paths=("conf/priv.env",),
        required_paths=("conf/priv.env",),
    )
    assert plan_mounts(spec, tmp_path / "m").hidden == ["conf/priv.env"]
    (ws / "conf").rename(ws / "moved")
    with pytest.raises(SandboxError, match=r"conf/priv.env \(a protected path of the base commit\) is gone"):
        plan_mounts(spec, tmp_path / "m")
    # A link put where the directory was is no way back in either.
    os.symlink(ws / "moved", ws / "conf")
    with pytest.raises(SandboxError, match="symbolic link"):
        plan_mounts(spec, tmp_path / "m")


def test_required_paths_are_classified_by_the_same_patterns_as_the_walk(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    spec = SandboxSpec(
        run_id="r",
        image="i",
        workspace=ws,
        readonly_paths=("conf/**",),
        hidden_paths=("*.env",),
        required_paths=("conf", "conf/priv.env"),
    )
    plan = plan_mounts(spec, tmp_path / "m")
    assert plan.readonly == [".git", "conf"] and plan.hidden == ["conf/priv.env"]
    stray = SandboxSpec(run_id="r", image="i", workspace=ws, required_paths=("app.py",))
    (ws / "app.py").write_text("x")
    with pytest.raises(SandboxError, match=r"no pattern in corral\.toml matches it"):
        plan_mounts(stray, tmp_path / "m")


def test_a_directory_the_walk_cannot_list_fails_closed(tmp_path: Path) -> None:
    # Root lists any directory, so the walk's error path is reached through one that vanished.
    with pytest.raises(SandboxError, match="cannot be listed to find protected paths"):
        find_on_disk(tmp_path / "vanished", PathRules(["*.env"], "hidden_paths"))
