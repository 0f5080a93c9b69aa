"""`corral server` as a process stops cleanly (exit 0) on SIGINT and on SIGTERM however the signal
reaches it: handed to one of its other threads, or with both signals blocked in the mask it inherited
(a supervisor's or a CI runner's)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import stacks_then_kill

CORRAL = [sys.executable, "-m", "corral"]
SYS_TGKILL = 234  # x86_64; the only architecture this suite runs on (see docs/testing.md)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _block_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
        port = _free_port()
        with (tmp_path / "server.stderr").open("a") as log:
            proc = subprocess.Popen(
                [*CORRAL, "server", "--listen", f"127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
                preexec_fn=preexec_fn,  # a signal mask only: no locks taken in the child
            )
        started.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.stderr").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("corral server did not come up")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _ended(proc: subprocess.Popen[str], log: Path) -> int:
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        stacks_then_kill(proc)
        pytest.fail(
            f"corral server did not stop within 30 s; its stderr, threads too:\n{log.read_text()[-8000:]}"
        )


def _other_thread(pid: int) -> int:
    """A thread of `pid` that is not its main thread (the server's own, serving HTTP)."""
    others = [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]
    assert others, "corral server runs more than one thread"
    return others[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_handed_to_another_of_its_threads_stops_the_server(
    start_server: Callable[..., subprocess.Popen[str]], tmp_path: Path, signum: int
) -> None:
    proc = start_server()
    libc = ctypes.CDLL(None, use_errno=True)
    # tgkill: what the kernel does when it picks a thread other than the main one for a signal.
    assert libc.syscall(SYS_TGKILL, proc.pid, _other_thread(proc.pid), signum) == 0, ctypes.get_errno()
    assert _ended(proc, tmp_path / "server.stderr") == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_server_whose_parent_blocked_the_stop_signals_still_stops_on_them(
    start_server: Callable[..., subprocess.Popen[str]], tmp_path: Path, signum: int
) -> None:
    proc = start_server(preexec_fn=_block_stop_signals)
    proc.send_signal(signum)
    assert _ended(proc, tmp_path / "server.stderr") == 0
