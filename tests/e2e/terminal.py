"""A real pseudo-terminal for interactive tests: tmux runs the command, send-keys types, capture-pane reads.

Each terminal has its own tmux server (`-L`), so tests never touch a user's tmux.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXIT_MARK = "CORRAL-TEST-EXIT="


class Terminal:
    def __init__(self, name: str, workdir: Path) -> None:
        if shutil.which("tmux") is None:
            if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
                pytest.fail("tmux is not installed: .ci/services.sh installs it")
            pytest.skip("tmux is not installed")
        self.socket = f"corral-test-{os.getpid()}-{name}"
        self.name = name
        self.workdir = workdir

    def _tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return proc.stdout

    def start(self, corral_args: list[str], env: dict[str, str]) -> None:
        """Run `corral ARGS` in a 140x45 terminal; the pane stays after it exits, showing its exit code."""
        script = self.workdir / f"{self.name}.sh"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
        command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "corral", *corral_args])
        script.write_text(f"#!/bin/sh\n{exports}{command}\necho {EXIT_MARK}$?\nsleep 600\n")
        script.chmod(0o700)
        self._tmux("new-session", "-d", "-s", self.name, "-x", "140", "-y", "45", str(script))

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-2000", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{text!r} never appeared on the terminal; it shows:\n{self.screen()}")

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", self.name, "-l", text)
        time.sleep(0.3)  # the TUI takes typed text and Enter as separate key events
        self._tmux("send-keys", "-t", self.name, "Enter")

    def exit_code(self, timeout: float = 120.0) -> int:
        screen = self.wait_for(EXIT_MARK, timeout)
        return int(screen.split(EXIT_MARK, 1)[1].split()[0])

    def pane_pid(self) -> int:
        return int(self._tmux("display-message", "-p", "-t", self.name, "#{pane_pid}").strip())

    def kill(self) -> None:
        """Close the terminal, as closing its window would: the processes in it get SIGHUP."""
        self._tmux("kill-server")
