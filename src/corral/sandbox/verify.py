"""Verify an image before a sandbox runs it: the pinned Claude Code, uid 1000, no setuid or setgid
file, and corral's labels.

Nothing from the image is executed. The image's file system is read as the tar `docker export`
streams from a created (never started) container, so a hand-edited `find` or `claude` cannot lie.
`/usr/local/bin/claude` must be byte-identical to the Claude Code binary of the installed
claude-agent-sdk, whose version is the pin.

A full check reads every byte of the image (seconds), so the ids of images that passed are kept
under the corral home: an image id is a hash of its config and layers, so any edit (a `docker
commit` over the tag, a rebuild by hand) makes a new id that is checked again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

from corral.errors import ImageRejected, SandboxError
from corral.sandbox import AGENT_UID, CLAUDE_CODE_LABEL
from corral.sandbox.images import IMAGE_KIND_LABEL, bundled_claude, find_image

CLAUDE_PATH = "usr/local/bin/claude"
_CHUNK = 1 << 20
_PASSED: dict[str, str] = {}
"""Image id -> pin verified in this process (the file below keeps them across processes)."""


def _cache_file() -> Path:
    from corral.settings import load_settings

    return load_settings().home / "images" / "verified.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    scratch.replace(path)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_claude_sha256(pin: str, cache: dict[str, Any]) -> str:
    """The sha256 of the Claude Code binary the installed claude-agent-sdk bundles (which must be the pin)."""
    from claude_agent_sdk._cli_version import __cli_version__

    if str(__cli_version__) != pin:
        raise ImageRejected(
            f"cannot verify images for Claude Code {pin}: "
            f"the installed claude-agent-sdk bundles {__cli_version__}",
            hint="set [agent].claude_code to the bundled version, or install the SDK that bundles the pin",
        )
    binary = bundled_claude()
    stat = binary.stat()
    key = f"{binary}:{stat.st_size}:{stat.st_mtime_ns}"
    known = cache.get("claude", {})
    if isinstance(known, dict) and known.get("key") == key:
        return str(known["sha256"])
    value = _sha256_file(binary)
    cache["claude"] = {"key": key, "sha256": value}
    return value


class _Stream(io.RawIOBase):
    """The chunks of `docker export` as a readable file, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _scan_filesystem(client: docker.DockerClient, image_id: str) -> tuple[list[str], str | None]:
    """(setuid/setgid regular files, sha256 of /usr/local/bin/claude or None) from the exported tree."""
    try:
        container = client.containers.create(image_id, command=["/nonexistent"], network_disabled=True)
    except docker.errors.DockerException as exc:
        raise SandboxError(f"cannot create a container to verify image {image_id[:19]}: {exc}") from exc
    special: list[str] = []
    claude: str | None = None
    try:
        stream = io.BufferedReader(_Stream(iter(container.export(chunk_size=_CHUNK))), buffer_size=_CHUNK)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if member.isreg() and member.mode & 0o6000:
                    special.append(f"/{name} (mode {member.mode & 0o7777:04o})")
                if name == CLAUDE_PATH and member.isreg():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        digest = hashlib.sha256()
                        while chunk := handle.read(_CHUNK):
                            digest.update(chunk)
                        claude = digest.hexdigest()
    except (docker.errors.DockerException, tarfile.TarError, OSError) as exc:
        raise SandboxError(f"cannot read the file system of image {image_id[:19]}: {exc}") from exc
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
    return special, claude


def image_problems(client: docker.DockerClient, image: Any, pin: str, cache: dict[str, Any]) -> list[str]:
    """Everything wrong with `image` for a sandbox of Claude Code `pin`; empty when it passes."""
    problems: list[str] = []
    labels: dict[str, str] = image.labels or {}
    if labels.get(CLAUDE_CODE_LABEL) != pin:
        problems.append(f"label {CLAUDE_CODE_LABEL} is {labels.get(CLAUDE_CODE_LABEL)!r}, not {pin!r}")
    if not labels.get(IMAGE_KIND_LABEL):
        problems.append(f"label {IMAGE_KIND_LABEL} is missing")
    user = str((image.attrs.get("Config") or {}).get("User") or "")
    if user.split(":")[0] != str(AGENT_UID):
        problems.append(f"the image's user is {user or 'root (unset)'!r}, not uid {AGENT_UID}")
    special, claude = _scan_filesystem(client, str(image.id))
    if special:
        shown = ", ".join(special[:10]) + (f" and {len(special) - 10} more" if len(special) > 10 else "")
        problems.append(f"setuid/setgid files: {shown}")
    if claude is None:
        problems.append(f"/{CLAUDE_PATH} is missing")
    elif claude != expected_claude_sha256(pin, cache):
        problems.append(f"/{CLAUDE_PATH} is not the Claude Code {pin} binary corral ships")
    return problems


def verify_image(client: docker.DockerClient, ref: str, pin: str, cache_path: Path | None = None) -> str:
    """Refuse `ref` unless it passes every check; return its id. Passing ids are remembered."""
    image = find_image(client, ref)
    if image is None:
        raise SandboxError(f"image {ref} does not exist", hint="run `corral image build`")
    image_id = str(image.id)
    if _PASSED.get(image_id) == pin:
        return image_id
    path = cache_path or _cache_file()
    cache = _load(path)
    passed = cache.get("passed", {})
    passed = passed if isinstance(passed, dict) else {}
    if passed.get(image_id) == pin:
        _PASSED[image_id] = pin
        return image_id
    problems = image_problems(client, image, pin, cache)
    if problems:
        raise ImageRejected(
            f"image {ref} ({image_id[7:19]}) failed verification: " + "; ".join(problems),
            hint="rebuild it from corral.toml with `corral image build --force`; never edit a corral image "
            "by hand",
            problems=tuple(problems),
        )
    cache["passed"] = {**passed, image_id: pin}
    _store(path, cache)
    _PASSED[image_id] = pin
    return image_id
