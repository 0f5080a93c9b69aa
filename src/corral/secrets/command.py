"""`cmd:COMMAND`: the stdout of a command, such as a password manager's CLI (`op read op://...`).

The command is split like a shell would (`shlex`) but run without one, with corral's environment and a
timeout, so a hung unlock prompt fails the resolution instead of the run hanging. Its stderr is never
echoed: a CLI that fails may print what it was asked for.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping

from corral.errors import ConfigError

COMMAND_TIMEOUT_SECONDS = 20.0


class CommandProvider:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)

    def fetch(self, name: str, target: str) -> str:
        try:
            argv = shlex.split(target)
        except ValueError as exc:
            raise ConfigError(
                f"secret {name!r}: cannot parse command: {exc}", hint="fix the quoting"
            ) from exc
        if not argv:
            raise ConfigError(f"secret {name!r}: the command is empty", hint="write 'cmd:PROGRAM ARGS...'")
        try:
            done = subprocess.run(
                argv,
                env=self._environ,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=COMMAND_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ConfigError(
                f"secret {name!r}: command {argv[0]!r} not found",
                hint="install it or give its full path",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ConfigError(
                f"secret {name!r}: command {argv[0]!r} did not finish in {COMMAND_TIMEOUT_SECONDS:.0f} s",
                hint="make it non-interactive (unlock the password manager first)",
            ) from exc
        if done.returncode != 0:
            raise ConfigError(
                f"secret {name!r}: command {argv[0]!r} exited with status {done.returncode}",
                hint="run it by hand to see why (its output is not shown, it may hold the secret)",
            )
        try:
            value = done.stdout.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"secret {name!r}: command {argv[0]!r} printed non-UTF-8", hint="") from exc
        if not value:
            raise ConfigError(
                f"secret {name!r}: command {argv[0]!r} printed nothing", hint="check the command"
            )
        return value
