"""Waiting for a corral process to end, with its thread stacks when it does not."""

from __future__ import annotations

import signal
import subprocess
import time


def stacks_then_kill(proc: subprocess.Popen[str]) -> str:
    """Ask a stuck corral for its threads' stacks (SIGUSR1, corral.cli.main), then kill it; returns
    what it printed to stderr from then on (or the whole of it, when stderr is a pipe)."""
    proc.send_signal(signal.SIGUSR1)
    time.sleep(2)
    proc.kill()
    if proc.stderr is None:
        proc.wait(30)
        return ""
    _, stderr = proc.communicate(timeout=30)
    return stderr or ""


def communicate_or_dump(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """`proc.communicate(timeout)`; a process still running then fails the test with its stacks."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        partial = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise AssertionError(
            f"{proc.args!r} did not end within {timeout} s; its stderr, then its threads:\n"
            f"{partial[-3000:]}\n{stacks_then_kill(proc)[-12000:]}"
        ) from None
    return stdout or "", stderr or ""
