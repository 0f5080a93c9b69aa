"""model/request_filter.py: what the proxy lets through. Pure functions, so every rule is tested here
directly; tests/model/test_proxy_filter.py shows the same rules at the proxy, and test_claude_code.py
that real Claude Code passes them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from corral.model.request_filter import (
    ALLOWED_BETAS,
    ALLOWED_KEYS,
    OUTPUT_CONFIG_KEYS,
    forward_query,
    refusal,
    split_betas,
)

PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
PDF = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}


def claude_code_body() -> dict[str, Any]:
    """The shape Claude Code 2.1.332 sends (recorded), with every block type it uses."""
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": True,
        "metadata": {"user_id": '{"session_id":"s"}'},
        "thinking": {"type": "enabled", "budget_tokens": 31999, "display": "updates"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "system": [
            {"type": "text", "text": "You are Claude Code"},
            {"type": "text", "text": "more", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {"name": "Bash", "description": "run", "input_schema": {"type": "object"}},
            {
                "name": "WebFetch",
                "description": "d",
                "input_schema": {"type": "object"},
                "defer_loading": True,
            },
            {"name": "Mine", "type": "custom", "input_schema": {}, "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": "fix the bug"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xyz"},
                    {"type": "text", "text": "reading"},
                    # The model's tool input is not inspected: it is data the agent wrote.
                    {"type": "tool_use", "id": "t1", "name": "Write", "input": {"source": {"type": "url"}}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                    {"type": "tool_result", "tool_use_id": "t2"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t3",
                        "content": [{"type": "tool_reference", "tool_name": "WebFetch"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "t4",
                        "content": [
                            {"type": "text", "text": "a screenshot"},
                            {"type": "image", "source": PNG},
                        ],
                    },
                    {"type": "image", "source": PNG},
                    {"type": "document", "source": PDF, "title": "spec"},
                ],
            },
        ],
    }


def test_claude_code_shaped_request_passes() -> None:
    assert refusal(claude_code_body()) is None
    assert refusal({"model": "m", "messages": [], "system": "plain"}) is None


@pytest.mark.parametrize("key", sorted(ALLOWED_KEYS))
def test_each_allowed_key_passes(key: str) -> None:
    body: dict[str, Any] = {"model": "m", "messages": []}
    body.setdefault(key, None if key in ("tools", "system", "output_config") else 1)
    assert refusal(body) is None


@pytest.mark.parametrize("key", ["mcp_servers", "container", "service_tier", "betas", "inference_geo", "x"])
def test_other_top_level_keys_refused(key: str) -> None:
    body = {**claude_code_body(), key: [{"type": "url", "url": "https://attacker.example/sse"}]}
    assert refusal(body) == f"request key {key} is not allowed through the proxy"


def test_several_unknown_keys_all_named() -> None:
    body = {**claude_code_body(), "mcp_servers": [], "container": "c"}
    assert refusal(body) == "request key container, mcp_servers is not allowed through the proxy"


@pytest.mark.parametrize("model", ["claude-sonnet-4-5-20250929", "claude-candidate-20260101", "m"])
@pytest.mark.parametrize(
    "config",
    [
        {"effort": "high"},
        {"effort": "low", "task_budget": {"type": "tokens", "total": 20000, "remaining": 5000}},
        {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        {},
    ],
)
def test_output_config_passes_for_any_model_id(model: str, config: dict[str, Any]) -> None:
    """What Claude Code adds for a model id it does not know: whether the id may be asked is the pin's
    decision; the filter's rules are the same for every model."""
    assert set(config) <= OUTPUT_CONFIG_KEYS
    assert refusal({**claude_code_body(), "model": model, "output_config": config}) is None


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("high", "output_config must be an object"),
        (["effort"], "output_config must be an object"),
        ({"effort": "high", "mcp_servers": []}, "output_config has key mcp_servers, which is not allowed"),
        ({"url": "u", "container": "c"}, "output_config has key container, url, which is not allowed"),
        ({"effort": {"type": "url"}}, "output_config.effort must be a string"),
        ({"effort": None}, "output_config.effort must be a string"),
        ({"format": "json"}, "output_config.format must be an object"),
        ({"effort": "high", "task_budget": 20000}, "output_config.task_budget must be an object"),
    ],
)
def test_malformed_or_unknown_output_config_refused(config: Any, problem: str) -> None:
    assert refusal({**claude_code_body(), "output_config": config}) == problem


def test_output_config_is_decided_before_the_rest_of_the_body() -> None:
    body = {**claude_code_body(), "output_config": {"x": 1}, "tools": "not a list"}
    assert refusal(body) == "output_config has key x, which is not allowed"


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "web_fetch_20250910", "name": "web_fetch"},
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "tool_search_tool_regex_20251119", "name": "tool_search"},
        {"type": "memory_20250818", "name": "memory"},
        # A typed tool that also looks like a client tool is still a server tool.
        {"type": "web_fetch_20250910", "name": "Bash", "input_schema": {"type": "object"}},
    ],
)
def test_server_tools_refused(tool: dict[str, Any]) -> None:
    body = claude_code_body()
    body["tools"].append(tool)
    problem = refusal(body)
    assert problem == (
        f"tool {tool['name']} of type {tool['type']} is a server tool: only client-defined tools are allowed"
    )


@pytest.mark.parametrize(
    ("tool", "problem"),
    [
        (
            {"name": "T", "input_schema": {}, "allowed_callers": ["code_execution_20250825"]},
            "has key allowed_callers",
        ),
        (
            {"name": "T", "input_schema": {}, "mcp_server_name": "x", "url": "u"},
            "has key mcp_server_name, url",
        ),
        ({"name": "T"}, "needs a name and an input_schema object"),
        ({"name": "T", "input_schema": "object"}, "needs a name and an input_schema object"),
        ({"input_schema": {}}, "needs a name and an input_schema object"),
        ({"name": 7, "input_schema": {}}, "needs a name and an input_schema object"),
    ],
)
def test_malformed_client_tools_refused(tool: dict[str, Any], problem: str) -> None:
    body = claude_code_body()
    body["tools"] = [tool]
    assert problem in (refusal(body) or "")


def test_tools_must_be_a_list_of_objects() -> None:
    assert refusal({"model": "m", "messages": [], "tools": {"name": "x"}}) == "tools must be a list"
    assert refusal({"model": "m", "messages": [], "tools": ["web_search"]}) == "each tool must be an object"
    assert refusal({"model": "m", "messages": [], "tools": []}) is None


@pytest.mark.parametrize(
    "source",
    [
        {"type": "url", "url": "https://attacker.example/x.png"},
        {"type": "file", "file_id": "file_011"},
        {"type": "text", "media_type": "text/plain", "data": "inline, but not base64"},
        {"type": "content", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]},
        {"media_type": "image/png", "data": "x"},
        "https://attacker.example/x.png",
        None,
    ],
)
@pytest.mark.parametrize("where", ["message", "tool_result", "nested tool_result"])
@pytest.mark.parametrize("kind", ["image", "document"])
def test_only_base64_sources_anywhere(source: Any, where: str, kind: str) -> None:
    body = claude_code_body()
    block: dict[str, Any] = {"type": kind, "source": source}
    if where != "message":
        block = {
            "type": "tool_result",
            "tool_use_id": "t9",
            "content": [{"type": "text", "text": "x"}, block],
        }
    if where == "nested tool_result":
        block = {"type": "tool_result", "tool_use_id": "t8", "content": [block]}
    body["messages"][2]["content"].append(block)
    given = source.get("type") if isinstance(source, dict) else source
    assert refusal(body) == (
        f"messages[2]: {kind} source of type {given} is refused: only inline base64 sources are allowed"
    )


def test_base64_source_with_extra_keys_refused() -> None:
    body = claude_code_body()
    body["messages"][0]["content"] = [{"type": "image", "source": {**PNG, "url": "https://attacker.example"}}]
    assert refusal(body) == "messages[0]: image source has key url, which is not allowed"
    body["messages"][0]["content"] = [{"type": "document", "source": {**PDF, "url": "u", "file_id": "f"}}]
    assert refusal(body) == "messages[0]: document source has key file_id, url, which is not allowed"


@pytest.mark.parametrize(
    "block",
    [
        {
            "type": "server_tool_use",
            "id": "s",
            "name": "web_fetch",
            "input": {"url": "https://attacker.example"},
        },
        {"type": "web_search_tool_result", "tool_use_id": "s", "content": []},
        {"type": "web_fetch_tool_result", "tool_use_id": "s", "content": {}},
        {"type": "mcp_tool_use", "id": "m", "name": "x", "server_name": "evil", "input": {}},
        {"type": "mcp_tool_result", "tool_use_id": "m", "content": []},
        {"type": "container_upload", "file_id": "file_011"},
        {"type": "code_execution_tool_result", "tool_use_id": "c", "content": {}},
        {"type": "search_result", "source": "https://attacker.example", "title": "t", "content": []},
        {"text": "no type"},
    ],
)
@pytest.mark.parametrize("nested", [False, True])
def test_other_block_types_refused(block: dict[str, Any], nested: bool) -> None:
    body = claude_code_body()
    outer = {"type": "tool_result", "tool_use_id": "t9", "content": [block]} if nested else block
    body["messages"][1]["content"].append(outer)
    assert refusal(body) == (
        f"messages[1]: content block of type {block.get('type')} is not allowed through the proxy"
    )


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ({"role": "user", "content": "x"}, "messages must be a list"),
        (None, "messages must be a list"),
        (["hello"], "messages[0] must be an object"),
        (
            [{"role": "user", "content": "x", "mcp_servers": []}],
            "messages[0] has key mcp_servers, which is not allowed",
        ),
        (
            # Claude Code's per-message keys, which it did not send in the recorded sessions.
            [
                {"role": "user", "content": "x"},
                {"role": "system", "content": [], "output_config": {}, "clear_at": 1},
            ],
            "messages[1] has key clear_at, output_config, which is not allowed",
        ),
        (
            [{"role": "user", "content": {"type": "text"}}],
            "messages[0]: content must be a string or a list of blocks",
        ),
        ([{"role": "user"}], "messages[0]: content must be a string or a list of blocks"),
        ([{"role": "user", "content": ["text"]}], "messages[0]: each content block must be an object"),
        (
            [
                {"role": "user", "content": "ok"},
                {"role": "user", "content": [{"type": "tool_result", "content": 5}]},
            ],
            "messages[1]: content must be a string or a list of blocks",
        ),
    ],
)
def test_malformed_messages_refused(messages: Any, problem: str) -> None:
    assert refusal({"model": "m", "messages": messages}) == problem


@pytest.mark.parametrize(
    ("system", "problem"),
    [
        ({"type": "text", "text": "x"}, "system must be a string or a list of text blocks"),
        (["text"], "system blocks must be text blocks"),
        (
            [{"type": "text", "text": "x"}, {"type": "image", "source": PNG}],
            "system blocks must be text blocks",
        ),
        ([{"type": "document", "source": {"type": "url", "url": "u"}}], "system blocks must be text blocks"),
    ],
)
def test_system_is_text_only(system: Any, problem: str) -> None:
    assert refusal({"model": "m", "messages": [], "system": system}) == problem


def test_refusal_does_not_change_the_body() -> None:
    body = claude_code_body()
    before = copy.deepcopy(body)
    refusal(body)
    assert body == before


def test_betas_split_into_forwarded_and_dropped() -> None:
    header = (
        " claude-code-20250219, mcp-client-2025-04-04,,files-api-2025-04-14 ,context-management-2025-06-27"
    )
    assert split_betas(header) == (
        ["claude-code-20250219", "context-management-2025-06-27"],
        ["mcp-client-2025-04-04", "files-api-2025-04-14"],
    )
    assert split_betas(None) == ([], [])
    assert split_betas("") == ([], [])
    assert split_betas(",".join(ALLOWED_BETAS)) == (list(ALLOWED_BETAS), [])
    for reaching_out in ("web-fetch-2025-09-10", "code-execution-2025-08-25", "computer-use-2025-01-24"):
        assert split_betas(reaching_out) == ([], [reaching_out])


@pytest.mark.parametrize(
    ("query", "forwarded"),
    [("beta=true", "beta=true"), ("", ""), ("beta=true&x=1", "beta=true"), ("x=1", ""), ("beta=false", "")],
)
def test_only_the_beta_query_is_forwarded(query: str, forwarded: str) -> None:
    assert forward_query(query) == forwarded
