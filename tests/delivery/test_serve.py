"""The deployment servers: real HTTP on 127.0.0.1, found again by a later command, switched atomically,
never serving outside their build, and gone when their port file is."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from corral.deploy.serve import ensure_server, read_server, stop_server


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_a_server_is_reused_switches_with_its_link_refuses_escapes_and_ends_with_its_port_file(
    tmp_path: Path,
) -> None:
    for name, text in (("v1", "one"), ("v2", "two")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.html").write_text(text)
    (tmp_path / "secret.txt").write_text("host file")
    os.symlink(tmp_path / "secret.txt", tmp_path / "v1" / "leak.html")
    current = tmp_path / "current"
    os.symlink(tmp_path / "v1", current)
    port_file = tmp_path / "server.port"

    pid, port = ensure_server(current, port_file)
    try:
        assert ensure_server(current, port_file) == (pid, port)  # found again, not started twice
        assert get(port, "index.html") == (200, "one")
        assert get(port, "leak.html")[0] == 404  # a link out of the build is not served
        tmp = tmp_path / "current.new"
        os.symlink(tmp_path / "v2", tmp)
        os.replace(tmp, current)
        assert get(port, "index.html") == (200, "two")  # the next request sees the switch
    finally:
        stop_server(port_file, current)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert read_server(port_file, current) is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2)


def test_a_server_ends_by_itself_when_its_home_is_removed(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    port_file = tmp_path / "server.port"
    pid, _port = ensure_server(tmp_path / "out", port_file)
    port_file.unlink()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0:
                break
        except OSError:
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
