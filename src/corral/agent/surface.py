"""The tool surface a run's agent sees, as one hash a model pin can hold, and the pin checks.

It covers the tool names Claude Code reports at init (its built-ins and the MCP tools it was given)
and each granted gateway tool with its schema hash (name, description and input schema, as the
gateway validated its policy against). A CLI upgrade that adds, drops or renames a tool, or an
upstream that changes a schema, changes the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import PinMismatch

if TYPE_CHECKING:
    from corral.config import Config
    from corral.state.models import ModelPin


@dataclass(frozen=True)
class ToolSurface:
    claude_code_version: str
    tools: tuple[str, ...]
    gateway_tools: tuple[str, ...]
    """`qualified@schema_hash` of each gateway tool the run's token may call."""

    @property
    def hash(self) -> str:
        doc = {"tools": sorted(self.tools), "gateway": sorted(self.gateway_tools)}
        return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()[:32]

    @classmethod
    def from_init(cls, data: dict[str, Any], gateway_tools: Iterable[str]) -> ToolSurface:
        """From Claude Code's `system/init` message data."""
        raw = data.get("tools")
        tools = tuple(sorted(str(t) for t in raw)) if isinstance(raw, list) else ()
        return cls(str(data.get("claude_code_version", "")), tools, tuple(sorted(gateway_tools)))


def check_config(pin: ModelPin, config: Config) -> None:
    """corral.toml's models and CLI version against the pin, before anything is created."""
    agent = config.agent
    for what, pinned, configured in (
        ("model", pin.model, agent.model),
        ("small model", pin.small_model, agent.small_model),
        ("Claude Code version", pin.claude_code, agent.claude_code),
    ):
        if pinned != configured:
            raise PinMismatch(
                f"corral.toml asks for {what} {configured}, but project {pin.project} is pinned to "
                f"{pinned} (pinned by {pin.pinned_by} at {pin.pinned_at:%Y-%m-%d %H:%M} UTC)",
                hint="run `corral regress --candidate MODEL` and `corral model promote MODEL`, "
                "or change corral.toml back to the pin",
            )


def check_surface(pin: ModelPin, surface: ToolSurface, image: str) -> None:
    """What Claude Code reported at init against the pin: the CLI really in the image, and the tools."""
    if surface.claude_code_version and surface.claude_code_version != pin.claude_code:
        raise PinMismatch(
            f"the Claude Code in image {image} is {surface.claude_code_version}, "
            f"but project {pin.project} is pinned to {pin.claude_code}",
            hint="rebuild the image with the pinned CLI (`corral image build`), or pin the new version "
            "after a passing `corral regress`",
        )
    if pin.tool_surface_hash and surface.hash != pin.tool_surface_hash:
        raise PinMismatch(
            f"the agent's tool surface {surface.hash} differs from the pinned {pin.tool_surface_hash} "
            f"({len(surface.tools)} Claude Code tools, {len(surface.gateway_tools)} gateway tools)",
            hint="a CLI upgrade, a gateway upstream or the grants changed the tools; re-pin with "
            "`corral model pin --from-run RUN` once a regression passes",
        )
