"""The one matcher for corral.toml's path patterns (`readonly_paths`, `hidden_paths`, control files).

The mounts, the hook policy and the commit check all ask this module, so a pattern can never mean
one thing to the sandbox and another to the policy. Patterns read as in `.gitignore`: a pattern with
no slash (other than a trailing one) matches at any depth, a leading or inner slash anchors it at the
repository root, `*` and `?` never cross `/`, `**` crosses directories, and a trailing `/` matches
directories only. Whatever a matched directory holds is matched too, and `dir/**` also names `dir`
itself, so the directory can be masked (and protected) whole.

Negation (`!`) and comments (`#`) are refused rather than honoured: a protection list that can
un-protect is too easy to get wrong, and a pattern silently read as a comment protects nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from pathspec import GitIgnoreSpec
from pathspec.patterns.gitignore import GitIgnorePatternError

if TYPE_CHECKING:
    from corral.config import Config

CONTROL_FILE = "corral.toml"
_GLOB_SPECIAL = re.compile(r"([\\*?\[])")
# Names that no sensible pattern singles out: a pattern that matches all of them matches everything.
_PROBES = ("a", "Zq.9", ".x-y_z")


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be a protected-path pattern, or None when it can."""
    if not pattern.strip():
        return "is empty"
    if pattern != pattern.strip():
        return "has leading or trailing whitespace"
    if pattern.startswith("!"):
        return "is a negation ('!'), which corral does not support in protected paths"
    if pattern.startswith("#"):
        return "starts with '#', which .gitignore reads as a comment (write '\\#' for a literal '#')"
    if ".." in PurePosixPath(pattern).parts:
        return "contains '..'"
    if not pattern.strip("/"):
        return "names the whole workspace"
    try:
        spec = GitIgnoreSpec.from_lines([pattern])
    except (GitIgnorePatternError, ValueError) as exc:
        return f"is not a valid pattern: {exc}"
    if all(spec.match_file(probe) for probe in _PROBES):
        return "names the whole workspace"
    return None


def literal(path: str) -> str:
    """A pattern that names exactly `path`, relative to the repository root (globs escaped)."""
    return "/" + _GLOB_SPECIAL.sub(r"\\\1", path.strip("/"))


def normalize(path: str) -> str:
    """A workspace-relative path in the one form the matcher compares: no `./`, no edge slashes."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return "/".join(parts)


class PathRules:
    """A compiled list of patterns. `matches` says whether a workspace-relative path is covered."""

    def __init__(self, patterns: Sequence[str], key: str = "paths") -> None:
        for pattern in patterns:
            problem = pattern_problem(pattern)
            if problem is not None:
                raise ValueError(f"{key}: pattern {pattern!r} {problem}")
        self.patterns = tuple(patterns)
        self.key = key
        lines = list(patterns)
        for pattern in patterns:
            if pattern.endswith("/**"):
                lines.append(_directory_itself(pattern))
        self._spec = GitIgnoreSpec.from_lines(lines)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"PathRules({list(self.patterns)!r}, key={self.key!r})"

    def matches(self, path: str, *, is_dir: bool = False) -> bool:
        """Whether the path, or a directory above it, is matched. `is_dir` marks a directory."""
        relative = normalize(path)
        if not relative:
            return False  # the workspace itself
        # pathspec reads a trailing slash as "a directory", and its gitignore patterns match
        # everything below a matched directory as well.
        return bool(self._spec.match_file(relative + ("/" if is_dir else "")))

    def select(self, paths: Iterable[str]) -> list[str]:
        """The paths that match, in the order given."""
        return [path for path in paths if self.matches(path)]


def _directory_itself(pattern: str) -> str:
    """`billing/**` also names the directory `billing`: the same anchoring, directories only."""
    base = pattern[: -len("/**")]
    anchored = base if "/" in base else "/" + base
    return anchored + "/"


@dataclass(frozen=True)
class Protection:
    """What the agent may not change (read-only) and may not see (hidden), as one pair of matchers."""

    readonly: PathRules
    hidden: PathRules

    @classmethod
    def of(cls, readonly: Sequence[str] = (), hidden: Sequence[str] = ()) -> Protection:
        return cls(PathRules(readonly, "readonly_paths"), PathRules(hidden, "hidden_paths"))

    @classmethod
    def from_config(cls, config: Config) -> Protection:
        """corral.toml's patterns plus corral's own control files, unless the config opts out.

        corral.toml and the gateway file decide what the next run may do (its checks, its hidden
        paths, the commands the gateway starts on the host), so an agent must not rewrite them.
        """
        readonly = list(config.sandbox.readonly_paths)
        if not config.sandbox.agent_may_edit_config:
            readonly.extend(literal(path) for path in control_files(config))
        return cls.of(readonly, config.sandbox.hidden_paths)

    def kind(self, path: str, *, is_dir: bool = False) -> Literal["hidden", "readonly"] | None:
        """Hidden wins over read-only: a hidden path is masked, which also makes it unwritable."""
        if self.hidden.matches(path, is_dir=is_dir):
            return "hidden"
        if self.readonly.matches(path, is_dir=is_dir):
            return "readonly"
        return None

    def covers(self, path: str, *, is_dir: bool = False) -> bool:
        return self.kind(path, is_dir=is_dir) is not None


def control_files(config: Config) -> list[str]:
    """Repository-relative paths of corral's own control files that live inside the repository."""
    files = [CONTROL_FILE]
    gateway = PurePosixPath(config.gateway.upstreams_file)
    if not gateway.is_absolute() and ".." not in gateway.parts and normalize(str(gateway)):
        files.append(normalize(str(gateway)))
    return files


def outermost(paths: Iterable[str]) -> list[str]:
    """Drop paths inside another path of the set: the outer one already covers them."""
    kept: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not any(path.startswith(outer + "/") for outer in kept):
            kept.append(path)
    return sorted(kept)


def ancestors(path: str) -> list[str]:
    """The directories above a workspace-relative path, outermost first, without the workspace."""
    parts = normalize(path).split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]
