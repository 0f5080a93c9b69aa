"""`env:VAR` and `file:/PATH`: values corral's own environment or filesystem already holds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from corral.errors import ConfigError


class EnvProvider:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def fetch(self, name: str, target: str) -> str:
        value = self._environ.get(target)
        if value is None or value == "":
            raise ConfigError(
                f"secret {name!r}: environment variable {target!r} is not set",
                hint=f"export {target}=... in the environment corral runs in",
            )
        return value


class FileProvider:
    def __init__(self, environ: Mapping[str, str]) -> None:
        del environ

    def fetch(self, name: str, target: str) -> str:
        path = Path(target)
        try:
            # A trailing newline is an artefact of `echo > file`, never part of a credential.
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"secret {name!r}: cannot read {path}: {exc.strerror}",
                hint="create the file, readable by the user corral runs as",
            ) from exc
