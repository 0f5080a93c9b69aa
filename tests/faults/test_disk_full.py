"""The host disk fills during a real run: CORRAL_HOME (state, spool, worktrees, sockets) sits on a
small tmpfs and the agent's command fills it. The run fails with an error that names the path and
what to do, every event acknowledged before is in the store, and nothing is left behind."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.audit.spool import RESERVE_BYTES, SpoolWriter
from corral.errors import StoreError
from corral.settings import Settings
from tests.e2e.conftest import make_repo, run_task
from tests.faults.conftest import assert_recorded

pytestmark = pytest.mark.docker

FILL = """\
turns:
  - tool_use: [{name: Bash, input: {command: "echo first > {workspace}/first.txt"}}]
  - tool_use: [{name: Bash, input: {command: "head -c 64m /dev/zero > {workspace}/fill.bin"}}]
  - tool_use: [{name: Bash, input: {command: "echo after > {workspace}/after.txt"}}]
  - text: done
"""


@pytest.fixture
def small_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="cf", dir="/tmp"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(home)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    monkeypatch.setenv("CORRAL_HOME", str(home))
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
        home.rmdir()


def test_a_full_disk_fails_the_run_clearly_and_keeps_what_was_acknowledged(
    agent_image: str, docker_client: Any, tmp_path: Path, write_playbook: Any, small_home: Path
) -> None:
    repo = make_repo(
        tmp_path / "r", {"a.txt": "a\n"}, "[agent]\ntimeout_seconds = 150\n[checks]\ncommand = 'true'\n"
    )
    result = run_task(repo, "fill the disk", write_playbook(FILL), Settings(home=small_home))
    print(result.record.phase, result.record.failure_reason)
    print([(e.kind, getattr(e, "command", "")) for e in result.events])
    assert result.record.phase == "failed"
    assert str(small_home) in result.record.failure_reason
    assert_recorded(result, docker_client)


def _fill(directory: Path) -> None:
    """Fill the filesystem holding `directory` to the last byte."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_the_spool_keeps_recording_on_a_full_disk_then_says_which_disk(small_home: Path) -> None:
    spool = small_home / "spool"
    writer = SpoolWriter(spool / "run~1.jsonl")
    _fill(small_home)
    line = '{"kind":"x","seq":%d,"pad":"' + "p" * 1000 + '"}'
    written = 0
    with pytest.raises(StoreError) as raised:
        for i in range(10 * RESERVE_BYTES // 1000):
            writer.write(line % i)
            written += 1
    # The reserve held about a mebibyte of events after the disk was full: the end of a run fits.
    assert written >= RESERVE_BYTES // 1024 // 2
    assert f"no space left on the disk holding the audit spool {spool}" in raised.value.message
    assert raised.value.hint and "CORRAL_HOME" in raised.value.hint
    writer.close()
    data = writer.path.read_bytes()  # whole lines only: no torn half-event was left behind
    assert data.endswith(b"\n") and data.count(b"\n") == written
