"""Images without a registry: a debootstrap base, `docker import`ed, and the agent image built on it.

- `corral/base:bookworm`: `debootstrap --variant=minbase bookworm` from the apt mirror this host
  already uses, streamed as a tar into `docker import`.
- `corral/agent:default` (also tagged `corral/agent:cc-<version>`): the base plus git, Python with
  pytest, socat and ripgrep, a non-root `agent` user (uid 1000), a `bridge` user (uid 1001) for socat,
  the preload library that makes Claude Code non-dumpable (`nodump.c`) and the Claude Code binary
  that the installed claude-agent-sdk wheel bundles, labelled `io.corral.claude-code=<version>` and
  `io.corral.recipe=<hash of the files in dockerfiles/>`: an image built from an older recipe is
  rebuilt on demand, like one that carries another Claude Code.

Builds take minutes, so every builder reports progress through a `(message) -> None` callback.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
from docker.auth import AuthConfig

from corral.errors import SandboxError
from corral.sandbox import CLAUDE_CODE_LABEL

Progress = Callable[[str], None]

SUITE = "bookworm"
BASE_IMAGE = f"corral/base:{SUITE}"
AGENT_REPOSITORY = "corral/agent"
AGENT_IMAGE = f"{AGENT_REPOSITORY}:default"
IMAGE_KIND_LABEL = "io.corral.image"
"""`base` or `agent`; inherited by images built FROM ours, so `corral image list` finds team images."""
RECIPE_LABEL = "io.corral.recipe"
NAME_LABEL = "io.corral.name"
"""The project or team a project/team image was built for."""
TEAM_LABEL = "io.corral.team"
"""The team a project/team image belongs to: `corral gc --images` judges only its own team's."""
DIGEST_LABEL = "io.corral.digest"
INPUTS_LABEL = "io.corral.inputs-hash"
DOCKERFILES = Path(__file__).parent / "dockerfiles"
APT_DIR = Path("/etc/apt")
# Suites whose mirror also carries bookworm: a host on another Debian release still names a usable
# archive. Security and updates suites live on other paths and are never used for debootstrap.
_DEBIAN_SUITES = {"bullseye", "bookworm", "trixie", "forky", "sid", "stable", "testing", "unstable"}


def _quiet(_message: str) -> None:
    """The default progress callback: say nothing."""


def agent_tag(claude_code_version: str) -> str:
    return f"{AGENT_REPOSITORY}:cc-{claude_code_version}"


def is_corral_image(name: str) -> bool:
    """True for the images corral builds itself (and so may build on demand)."""
    return name in (BASE_IMAGE, AGENT_IMAGE) or name.startswith(f"{AGENT_REPOSITORY}:cc-")


# ---------------------------------------------------------------------------------------------------
# Docker client


def docker_client(timeout: int = 120) -> docker.DockerClient:
    """A client for the local Docker Engine (DOCKER_HOST or the default socket).

    corral never pulls or pushes, so it keeps no registry credentials: the auth entries the SDK
    parses from ~/.docker/config.json are dropped at once and can never be sent anywhere.
    """
    try:
        client = docker.from_env(timeout=timeout)
        client.api._auth_configs = AuthConfig({})
        client.ping()
    except docker.errors.DockerException as exc:
        raise SandboxError(
            f"Docker Engine is not running (or this user cannot reach its socket): {exc}",
            hint="install docker.io and start dockerd, then `corral doctor`",
        ) from exc
    return client


# ---------------------------------------------------------------------------------------------------
# The host's apt mirror


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    origin: Path


def _one_line_sources(path: Path) -> Iterator[AptSource]:
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        # `deb [arch=amd64 signed-by=...] URI SUITE COMPONENT...`
        line = re.sub(r"\[[^\]]*\]", " ", line)
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb":
            yield AptSource(parts[1], (parts[2],), path)


def _deb822_sources(path: Path) -> Iterator[AptSource]:
    text = path.read_text(encoding="utf-8", errors="replace")
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        for uri in fields.get("uris", "").split():
            yield AptSource(uri, suites, path)


def apt_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    """Every `deb` source apt itself would read: sources.list, sources.list.d/*.list and *.sources."""
    found: list[AptSource] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        found.extend(_one_line_sources(main))
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                found.extend(_one_line_sources(path))
            elif path.suffix == ".sources":
                found.extend(_deb822_sources(path))
    return found


def host_apt_mirror(apt_dir: Path = APT_DIR) -> str:
    """The Debian archive this host's apt uses: a source for bookworm first, else any Debian suite."""
    sources = apt_sources(apt_dir)
    for source in sources:
        if SUITE in source.suites:
            return source.uri
    for source in sources:
        if _DEBIAN_SUITES.intersection(source.suites):
            return source.uri
    raise SandboxError(
        f"no Debian archive found in {apt_dir}/sources.list or {apt_dir}/sources.list.d/",
        hint="add the Debian mirror this machine may use (like `deb http://MIRROR/debian bookworm main`)"
        " to apt's sources, or pass mirror= to build_base_image",
    )


# ---------------------------------------------------------------------------------------------------
# Image lookups


def find_image(client: docker.DockerClient, name: str) -> Any | None:
    """The image called `name`, or None when the engine does not have it."""
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise SandboxError(f"Docker Engine failed to look up image {name}: {exc}") from exc


def image_claude_code(image: Any) -> str | None:
    labels: dict[str, str] = image.labels or {}
    return labels.get(CLAUDE_CODE_LABEL)


def recipe_hash() -> str:
    """A hash of everything the agent image is built from but the Claude Code binary (its own label)."""
    digest = hashlib.sha256()
    for path in sorted(DOCKERFILES.iterdir()):
        if path.is_file():
            digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def image_is_current(image: Any, claude_code_version: str) -> bool:
    """True when a corral-built agent image carries the pinned Claude Code and today's recipe."""
    labels: dict[str, str] = image.labels or {}
    return image_claude_code(image) == claude_code_version and labels.get(RECIPE_LABEL) == recipe_hash()


def image_claude_version(client: docker.DockerClient, name: str) -> str | None:
    """The Claude Code version image `name` is labelled with; None when the image does not exist.

    An existing image without the label gives "" so callers can tell it from a missing image.
    """
    image = find_image(client, name)
    if image is None:
        return None
    return image_claude_code(image) or ""


@dataclass(frozen=True)
class ImageSummary:
    id: str
    tags: tuple[str, ...]
    kind: str
    claude_code: str | None
    created: str
    size_bytes: int
    name: str = ""
    """The project or team a project/team image was built for."""
    inputs_hash: str = ""
    """The hash of the input files a project/team image was built from."""


def list_images(client: docker.DockerClient) -> list[ImageSummary]:
    """corral's images and every image built FROM them (they inherit IMAGE_KIND_LABEL)."""
    try:
        images = client.images.list(filters={"label": IMAGE_KIND_LABEL})
    except docker.errors.APIError as exc:
        raise SandboxError(f"Docker Engine failed to list images: {exc}") from exc
    rows = []
    for image in images:
        attrs: dict[str, Any] = image.attrs
        labels: dict[str, str] = image.labels or {}
        rows.append(
            ImageSummary(
                id=image.short_id,
                tags=tuple(sorted(image.tags)),
                kind=labels.get(IMAGE_KIND_LABEL, ""),
                claude_code=labels.get(CLAUDE_CODE_LABEL),
                created=str(attrs.get("Created", "")),
                size_bytes=int(attrs.get("Size", 0)),
                name=labels.get(NAME_LABEL, ""),
                inputs_hash=labels.get(INPUTS_LABEL, ""),
            )
        )
    return sorted(rows, key=lambda row: row.tags)


# ---------------------------------------------------------------------------------------------------
# Base image


def _stream_lines(argv: list[str], progress: Progress, what: str) -> None:
    """Run argv, passing each output line to progress; raise SandboxError naming `what` on failure."""
    tail: list[str] = []
    try:
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                tail = [*tail[-19:], line]
                progress(line)
            code = proc.wait()
    except FileNotFoundError as exc:
        raise SandboxError(f"{argv[0]} is not installed", hint=f"apt-get install {argv[0]}") from exc
    if code != 0:
        raise SandboxError(
            f"{what} failed with exit code {code}:\n" + "\n".join(tail),
            hint="check that this machine reaches its apt mirror and runs corral as root for the build",
        )


def _tar_chunks(root: Path) -> Iterator[bytes]:
    """The tree as an uncompressed tar stream, numeric owners kept, without touching the disk."""
    with subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", "-", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while chunk := proc.stdout.read(1 << 20):
            yield chunk
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise SandboxError(f"tar of the debootstrap tree {root} failed: {err.strip()}")


def build_base_image(
    client: docker.DockerClient,
    *,
    force: bool = False,
    progress: Progress = _quiet,
    mirror: str | None = None,
) -> str:
    """Build corral/base:bookworm unless it exists (or `force`); return its image id."""
    existing = find_image(client, BASE_IMAGE)
    if existing is not None and not force:
        return str(existing.id)
    if os.geteuid() != 0:
        raise SandboxError(
            f"building {BASE_IMAGE} runs debootstrap, which needs root",
            hint="run `sudo corral image build` once; later runs reuse the image",
        )
    mirror = mirror or host_apt_mirror()
    if urlsplit(mirror).username or urlsplit(mirror).password:
        # The image's sources.list would carry them into every sandbox (DESIGN invariant 1).
        raise SandboxError(
            f"the apt mirror {urlsplit(mirror).hostname} has credentials in its URL; corral will not bake "
            "them into an image",
            hint="pass mirror= an address without credentials (apt's auth.conf is not copied)",
        )
    progress(f"debootstrap {SUITE} (minbase) from {mirror}")
    tree = Path(tempfile.mkdtemp(prefix="corral-rootfs-"))
    try:
        _stream_lines(["debootstrap", "--variant=minbase", SUITE, str(tree), mirror], progress, "debootstrap")
        # Package caches only make the image bigger; apt-get update refetches lists in builds.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (tree / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        # debootstrap copies these from the host; Docker provides its own at run time.
        for host_file in ("etc/resolv.conf", "etc/hostname"):
            (tree / host_file).unlink(missing_ok=True)
        progress(f"docker import as {BASE_IMAGE}")
        changes = [f"LABEL {IMAGE_KIND_LABEL}=base", 'CMD ["/bin/bash"]', "ENV LANG=C.UTF-8"]
        try:
            image = client.api.import_image_from_stream(
                _tar_chunks(tree), repository="corral/base", tag=SUITE, changes=changes
            )
        except docker.errors.APIError as exc:
            raise SandboxError(f"docker import of {BASE_IMAGE} failed: {exc}") from exc
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    found = find_image(client, BASE_IMAGE)
    if found is None:
        raise SandboxError(f"docker import finished but {BASE_IMAGE} is missing: {image!r}")
    progress(f"{BASE_IMAGE} is {found.short_id}")
    return str(found.id)


# ---------------------------------------------------------------------------------------------------
# Agent image


def bundled_claude() -> Path:
    """The Claude Code binary inside the installed claude-agent-sdk wheel (without importing it)."""
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        raise SandboxError(
            "claude-agent-sdk is not installed", hint="pip install claude-agent-sdk (see pyproject.toml)"
        )
    binary = Path(spec.origin).parent / "_bundled" / "claude"
    if not binary.is_file():
        raise SandboxError(
            f"{binary} is missing: this claude-agent-sdk wheel bundles no Claude Code CLI",
            hint="install the platform wheel of claude-agent-sdk (manylinux), not the source package",
        )
    return binary


def claude_version(binary: Path) -> str:
    """`claude --version`, run with an empty environment so it sees no host setting or key."""
    with tempfile.TemporaryDirectory(prefix="corral-cc-") as home:
        try:
            done = subprocess.run(
                [str(binary), "--version"],
                capture_output=True,
                text=True,
                timeout=60,
                env={"PATH": "/usr/bin:/bin", "HOME": home, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"{binary} --version failed: {exc}") from exc
    match = re.match(r"\s*(\d+\.\d+\.\d+\S*)", done.stdout)
    if done.returncode != 0 or match is None:
        raise SandboxError(f"{binary} --version printed no version: {done.stdout!r} {done.stderr!r}")
    return match.group(1)


def _link_or_copy(source: Path, target: Path) -> None:
    # The binary is about 400 MB: a hard link costs nothing when the temp dir shares its filesystem.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build_agent_image(
    client: docker.DockerClient,
    claude_code_version: str,
    *,
    force: bool = False,
    progress: Progress = _quiet,
) -> str:
    """Build corral/agent:default and corral/agent:cc-<version>; return the image id.

    Reuses an existing image that already carries the pinned version and today's recipe unless `force`.
    """
    tag = agent_tag(claude_code_version)
    existing = find_image(client, tag)
    default = find_image(client, AGENT_IMAGE)
    if existing is not None and not force and image_is_current(existing, claude_code_version):
        if default is None or default.id != existing.id:
            existing.tag(AGENT_REPOSITORY, "default")
        return str(existing.id)
    binary = bundled_claude()
    bundled = claude_version(binary)
    if bundled != claude_code_version:
        raise SandboxError(
            f"the installed claude-agent-sdk bundles Claude Code {bundled}, "
            f"but corral.toml [agent].claude_code pins {claude_code_version}",
            hint=f'set [agent].claude_code = "{bundled}", or install the claude-agent-sdk release '
            f"that bundles {claude_code_version}",
        )
    if find_image(client, BASE_IMAGE) is None:
        build_base_image(client, progress=progress)
    progress(f"docker build {tag} (Claude Code {bundled})")
    with tempfile.TemporaryDirectory(prefix="corral-agent-ctx-") as ctx:
        context = Path(ctx)
        shutil.copyfile(DOCKERFILES / "agent.Dockerfile", context / "Dockerfile")
        shutil.copyfile(DOCKERFILES / "nodump.c", context / "nodump.c")
        _link_or_copy(binary, context / "claude")
        buildargs = {"CLAUDE_CODE_VERSION": claude_code_version, "CORRAL_RECIPE": recipe_hash()}
        image_id = _docker_build(client, context, tag, buildargs, progress)
    image = client.images.get(image_id)
    image.tag(AGENT_REPOSITORY, "default")
    if image_claude_code(image) != claude_code_version:
        raise SandboxError(f"built {tag} but its {CLAUDE_CODE_LABEL} label is {image_claude_code(image)!r}")
    progress(f"{AGENT_IMAGE} = {tag} is {image.short_id}")
    _drop_untagged(client, {old.id for old in (existing, default) if old is not None} - {image.id})
    return str(image.id)


def _drop_untagged(client: docker.DockerClient, image_ids: set[str]) -> None:
    """Remove images a rebuild left without a tag (each is ~700 MB); keep any still in use."""
    for image_id in image_ids:
        old = find_image(client, image_id)
        if old is not None and not old.tags:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image_id)


def _docker_build(
    client: docker.DockerClient, context: Path, tag: str, buildargs: dict[str, str], progress: Progress
) -> str:
    image_id: str | None = None
    tail: list[str] = []
    try:
        for chunk in client.api.build(
            path=str(context), tag=tag, rm=True, forcerm=True, buildargs=buildargs, decode=True, pull=False
        ):
            if "error" in chunk:
                raise SandboxError(
                    f"docker build of {tag} failed: {chunk['error'].strip()}\n" + "\n".join(tail),
                    hint="check that `docker build` reaches the Debian mirror, then `corral image build`",
                )
            text = str(chunk.get("stream", "")).rstrip()
            if text:
                tail = [*tail[-19:], text]
                progress(text)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = str(aux["ID"])
    except docker.errors.APIError as exc:
        raise SandboxError(f"docker build of {tag} failed: {exc}") from exc
    if image_id is None:
        found = find_image(client, tag)
        if found is None:
            raise SandboxError(f"docker build of {tag} reported no image:\n" + "\n".join(tail))
        image_id = str(found.id)
    return image_id


# ---------------------------------------------------------------------------------------------------
# On demand


@dataclass(frozen=True)
class BuildReport:
    base_id: str
    agent_id: str
    base_seconds: float
    agent_seconds: float
    built_base: bool
    built_agent: bool


def build_images(
    client: docker.DockerClient, claude_code_version: str, *, force: bool = False, progress: Progress = _quiet
) -> BuildReport:
    """`corral image build`: the base and the agent image, timed."""
    old_base = find_image(client, BASE_IMAGE)
    had_agent = find_image(client, agent_tag(claude_code_version)) is not None
    start = time.monotonic()
    base_id = build_base_image(client, force=force, progress=progress)
    middle = time.monotonic()
    agent_id = build_agent_image(client, claude_code_version, force=force, progress=progress)
    had_base = old_base is not None
    if old_base is not None and old_base.id != base_id:
        # Only now is the old base free: the old agent image, its child, is gone.
        _drop_untagged(client, {old_base.id})
    return BuildReport(
        base_id,
        agent_id,
        middle - start,
        time.monotonic() - middle,
        force or not had_base,
        force or not had_agent,
    )


def ensure_images(
    client: docker.DockerClient, claude_code_version: str, image_name: str, progress: Progress = _quiet
) -> str:
    """Make sure `image_name` exists and carries the pinned Claude Code; build ours when missing.

    Returns the image id. A team image is never built here: corral cannot know its recipe.
    """
    image = find_image(client, image_name)
    if is_corral_image(image_name):
        if image_name.startswith(f"{AGENT_REPOSITORY}:cc-") and image_name != agent_tag(claude_code_version):
            raise SandboxError(
                f"corral.toml [sandbox].image = {image_name!r} names another Claude Code than "
                f"[agent].claude_code = {claude_code_version!r}",
                hint=f"use {AGENT_IMAGE!r} or {agent_tag(claude_code_version)!r}",
            )
        if image is None or not image_is_current(image, claude_code_version):
            if image is not None:
                progress(
                    f"{image_name} carries Claude Code {image_claude_code(image)} and recipe "
                    f"{(image.labels or {}).get(RECIPE_LABEL)}; rebuilding"
                )
            return build_agent_image(client, claude_code_version, progress=progress)
        return str(image.id)
    if image is None:
        raise SandboxError(
            f"image {image_name!r} (corral.toml [sandbox].image) does not exist in the Docker Engine",
            hint=f"build it FROM {BASE_IMAGE} (run `corral image build` first) with "
            f"LABEL {CLAUDE_CODE_LABEL}={claude_code_version}, or set [sandbox].image = {AGENT_IMAGE!r}",
        )
    carried = image_claude_code(image)
    if carried != claude_code_version:
        raise SandboxError(
            f"image {image_name!r} (corral.toml [sandbox].image) carries Claude Code "
            f"{carried or '(unlabelled)'} but [agent].claude_code pins {claude_code_version}",
            hint=f"rebuild it with Claude Code {claude_code_version} and "
            f"LABEL {CLAUDE_CODE_LABEL}={claude_code_version}, or change the pin",
        )
    return str(image.id)
