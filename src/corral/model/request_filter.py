"""What the model proxy lets through to the upstream: the Messages API as Claude Code uses it, and
nothing that makes the upstream reach anywhere on the agent's behalf.

A request from the sandbox is hostile. With our key, the Anthropic API would fetch an image or document
given by URL, run server tools (web_fetch, web_search, code execution), or connect to `mcp_servers` it
names. So a request goes upstream only if:

- every top-level key is in `ALLOWED_KEYS` (no `mcp_servers`, no `container`, no `service_tier`), and
  `output_config` holds only the keys in `OUTPUT_CONFIG_KEYS`;
- every tool is client-defined: a name and an input schema, no `type` but "custom";
- every content block, in messages, the system prompt and nested tool results, is of a type in
  `ALLOWED_BLOCKS`, and every image or document source is inline base64 data;
- the `anthropic-beta` header keeps only the values in `ALLOWED_BETAS`; others are dropped, and the
  proxy records which.

Everything here is pure: a body in, a refusal reason (or None) out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

ALLOWED_KEYS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_k",
        "top_p",
        "tools",
        "tool_choice",
        "thinking",
        "context_management",
        "output_config",
    }
)
"""Top-level request keys: the Messages API parameters that only shape generation. Claude Code 2.1.332
sends model, messages, max_tokens, system, metadata, stream, thinking, tools, context_management, and
for its side requests temperature and tool_choice. For a model id it does not know (a candidate in
`corral regress`) it also sends `output_config`. Which model ids may be asked is the pin's decision,
not this filter's: every rule here holds for every model."""

OUTPUT_CONFIG_KEYS = frozenset({"effort", "format", "task_budget"})
"""Keys of `output_config`: how hard the model works (`effort`, a string), the shape of its answer
(`format`, a JSON schema) and a token budget for the task (`task_budget`). Each only shapes the answer
in hand. Claude Code 2.1.332 sends `{"effort": "high"}` to a model id it does not know."""

ALLOWED_TOOL_KEYS = frozenset(
    {"name", "description", "input_schema", "type", "cache_control", "defer_loading"}
)
"""Keys of a client tool. Claude Code marks tools it loads on demand with `defer_loading`."""

ALLOWED_BLOCKS = frozenset(
    {
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "tool_reference",
        "thinking",
        "redacted_thinking",
    }
)
"""Content block types. `tool_reference` is what Claude Code's ToolSearch returns: it names a deferred
tool of the same request. The server-tool and MCP result blocks, `container_upload` (a file id) and
`search_result` are not among them."""

SOURCE_KEYS = frozenset({"type", "media_type", "data"})

ALLOWED_BETAS = (
    "claude-code-20250219",
    "interleaved-thinking-2025-05-14",
    "context-management-2025-06-27",
    "thinking-token-count-2026-05-13",
    "advanced-tool-use-2025-11-20",
    "thinking-display-updates-2026-08-18",
)
"""The `anthropic-beta` values Claude Code 2.1.332 sends (recorded by tests/model/test_claude_code.py).
Each only changes how the model answers the request in hand. Betas that reach out (files, MCP client,
web fetch, code execution, computer use) are not here, and their request fields are refused anyway."""


def refusal(body: Mapping[str, Any]) -> str | None:
    """Why `body` must not go upstream, or None if it may."""
    unknown = sorted(set(body) - ALLOWED_KEYS)
    if unknown:
        return f"request key {', '.join(unknown)} is not allowed through the proxy"
    return (
        _output_config(body.get("output_config"))
        or _tools(body.get("tools"))
        or _system(body.get("system"))
        or _messages(body.get("messages"))
    )


def _output_config(config: Any) -> str | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        return "output_config must be an object"
    extra = sorted(set(config) - OUTPUT_CONFIG_KEYS)
    if extra:
        return f"output_config has key {', '.join(extra)}, which is not allowed"
    if not isinstance(config.get("effort", ""), str):
        return "output_config.effort must be a string"
    for key in ("format", "task_budget"):
        if not isinstance(config.get(key, {}), dict):
            return f"output_config.{key} must be an object"
    return None


def _tools(tools: Any) -> str | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "tools must be a list"
    for tool in tools:
        if not isinstance(tool, dict):
            return "each tool must be an object"
        name = tool.get("name")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            return f"tool {name} of type {kind} is a server tool: only client-defined tools are allowed"
        extra = sorted(set(tool) - ALLOWED_TOOL_KEYS)
        if extra:
            return f"tool {name} has key {', '.join(extra)}, which is not allowed"
        if not isinstance(name, str) or not isinstance(tool.get("input_schema"), dict):
            return f"tool {name} needs a name and an input_schema object"
    return None


def _system(system: Any) -> str | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return "system must be a string or a list of text blocks"
    for block in system:
        if not isinstance(block, dict) or block.get("type") != "text":
            return "system blocks must be text blocks"
    return None


def _messages(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return "messages must be a list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] must be an object"
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            return f"messages[{index}] has key {', '.join(extra)}, which is not allowed"
        problem = _content(message.get("content"))
        if problem:
            return f"messages[{index}]: {problem}"
    return None


def _content(content: Any) -> str | None:
    """A message's or a tool result's content: a string, or a list of allowed blocks."""
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return "content must be a string or a list of blocks"
    for block in content:
        problem = _block(block)
        if problem:
            return problem
    return None


def _block(block: Any) -> str | None:
    if not isinstance(block, dict):
        return "each content block must be an object"
    kind = block.get("type")
    if kind not in ALLOWED_BLOCKS:
        return f"content block of type {kind} is not allowed through the proxy"
    if kind in ("image", "document"):
        return _source(kind, block.get("source"))
    if kind == "tool_result" and "content" in block:
        return _content(block["content"])
    return None


def _source(kind: str, source: Any) -> str | None:
    if not isinstance(source, dict) or source.get("type") != "base64":
        given = source.get("type") if isinstance(source, dict) else source
        return f"{kind} source of type {given} is refused: only inline base64 sources are allowed"
    extra = sorted(set(source) - SOURCE_KEYS)
    if extra:
        return f"{kind} source has key {', '.join(extra)}, which is not allowed"
    return None


def split_betas(header: str | None) -> tuple[list[str], list[str]]:
    """The `anthropic-beta` values to forward, and the ones dropped."""
    kept: list[str] = []
    dropped: list[str] = []
    for value in (header or "").split(","):
        value = value.strip()
        if value:
            (kept if value in ALLOWED_BETAS else dropped).append(value)
    return kept, dropped


def forward_query(query: str) -> str:
    """The query string to forward: Claude Code's `beta=true`, and nothing else."""
    return "beta=true" if ("beta", "true") in parse_qsl(query) else ""
