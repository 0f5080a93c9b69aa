"""Hook decisions: the second line of defence behind the mounts.

The container's mounts already make read-only paths unwritable and hidden paths unreadable. The
PreToolUse hook refuses the same calls before they run, so the agent gets a clear reason and the
audit shows a denial rather than a failed syscall.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from corral.paths import PathRules, Protection

WRITE_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})
READ_TOOLS = frozenset({"Read", "Grep", "Glob", "LS", "NotebookRead"})
_PATH_KEYS = ("file_path", "path", "notebook_path")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str = ""
    reason: str = ""


ALLOW = Decision(True)


def _covers(rules: PathRules, rel: str) -> bool:
    """A tool's path may name a file or a directory: refuse it if either reading matches."""
    return rules.matches(rel) or rules.matches(rel, is_dir=True)


@dataclass(frozen=True)
class PathPolicy:
    workdir: str
    readonly_paths: tuple[str, ...]
    hidden_paths: tuple[str, ...]

    @cached_property
    def protection(self) -> Protection:
        """The same matcher the mounts and the commit check use (`corral.paths`)."""
        return Protection.of(self.readonly_paths, self.hidden_paths)

    def relative(self, path: str) -> str | None:
        """The workspace-relative form of a container path, or None when it lies outside."""
        full = posixpath.normpath(path if path.startswith("/") else posixpath.join(self.workdir, path))
        if full == self.workdir:
            return ""
        if not full.startswith(self.workdir.rstrip("/") + "/"):
            return None
        return full[len(self.workdir.rstrip("/")) + 1 :]

    def decide(self, tool_name: str, tool_input: dict[str, Any]) -> Decision:
        paths = [str(tool_input[key]) for key in _PATH_KEYS if isinstance(tool_input.get(key), str)]
        for path in paths:
            rel = self.relative(path)
            if tool_name in WRITE_TOOLS and rel is None:
                return Decision(False, "workspace", f"{path} is outside the workspace {self.workdir}")
            if rel is None:
                continue
            if _covers(self.protection.hidden, rel) and (tool_name in WRITE_TOOLS or tool_name in READ_TOOLS):
                return Decision(False, "hidden_paths", f"{rel} is a hidden path in corral.toml")
            if tool_name in WRITE_TOOLS and _covers(self.protection.readonly, rel):
                return Decision(False, "readonly_paths", f"{rel} is a read-only path in corral.toml")
        return ALLOW
