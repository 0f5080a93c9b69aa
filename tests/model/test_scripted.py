from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from corral.model.playbook import Playbook
from corral.model.scripted import FINAL_TEXT, SIDE_REQUEST_TEXT, SUBAGENT_TEXT, assistant_turns, scripted_app

from .conftest import PINNED, parse_sse

LONG = "x" * 300
PLAYBOOK = Playbook.from_text(
    f"""
turns:
  - tool_use:
      - {{name: Bash, input: {{command: "echo hello > {{workspace}}/out.txt", description: "{LONG}"}}}}
      - {{name: Read, input: {{file_path: "{{workspace}}/out.txt"}}}}
  - tool_use:
      - {{name: Edit, input: {{file_path: "{{workspace}}/a.py", old_string: "a", new_string: "b"}}}}
  - text: "all done in {{workspace}}"
""",
    "t.yaml",
)
TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


@pytest.fixture
def client() -> TestClient:
    return TestClient(scripted_app(PLAYBOOK, "/ws"))


def conversation(assistant_messages: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "do it"}]
    for i in range(assistant_messages):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"a{i}"}]})
        messages.append({"role": "user", "content": [{"type": "text", "text": f"u{i}"}]})
    return messages


def ask(
    client: TestClient, messages: list[dict[str, Any]], *, tools: bool = True, stream: bool = True
) -> Any:
    body: dict[str, Any] = {"model": PINNED, "max_tokens": 1000, "messages": messages, "stream": stream}
    if tools:
        body["tools"] = TOOLS
    response = client.post("/v1/messages?beta=true", json=body)
    assert response.status_code == 200, response.text
    return parse_sse(response.content) if stream else response.json()


def blocks_of(events: list[tuple[str, dict[str, Any]]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rebuild content blocks from the stream, checking the event grammar as it goes."""
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    blocks: list[dict[str, Any]] = []
    open_index: int | None = None
    for name, data in events[1:-2]:
        if name == "ping":
            continue
        if name == "content_block_start":
            assert open_index is None, "a block started before the previous one stopped"
            assert data["index"] == len(blocks)
            open_index = data["index"]
            blocks.append({**data["content_block"], "_json": ""})
        elif name == "content_block_delta":
            assert data["index"] == open_index
            delta = data["delta"]
            if delta["type"] == "text_delta":
                blocks[-1]["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                blocks[-1]["_json"] += delta["partial_json"]
                blocks[-1]["_fragments"] = blocks[-1].get("_fragments", 0) + 1
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        else:
            pytest.fail(f"unexpected event {name}")
    assert open_index is None
    for block in blocks:
        if block["type"] == "tool_use":
            assert block["input"] == {}, "tool input must arrive as input_json_delta, not in the start"
            block["input"] = json.loads(block["_json"])
    return blocks, events[-2][1]


def test_stream_plays_turn_zero_as_tool_uses(client: TestClient) -> None:
    events = ask(client, conversation(0))
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["model"] == PINNED and start["usage"]["input_tokens"] > 0
    blocks, delta = blocks_of(events)
    assert [b["name"] for b in blocks] == ["Bash", "Read"]
    assert blocks[0]["input"] == {"command": "echo hello > /ws/out.txt", "description": "x" * 300}
    assert blocks[0]["_fragments"] > 1, "a long input spans several input_json_delta fragments"
    assert blocks[1]["input"] == {"file_path": "/ws/out.txt"}
    assert all(b["id"].startswith("toolu_") for b in blocks)
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] > 0


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, ("tool_use", "Edit")), (2, ("end_turn", "all done in /ws")), (3, ("end_turn", FINAL_TEXT))],
)
def test_turn_chosen_by_assistant_count(client: TestClient, k: int, expected: tuple[str, str]) -> None:
    blocks, delta = blocks_of(ask(client, conversation(k)))
    assert delta["delta"]["stop_reason"] == expected[0]
    assert (blocks[0].get("name") or blocks[0].get("text")) == expected[1]


def test_consecutive_assistant_messages_count_as_one_turn() -> None:
    split = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
    ]
    assert assistant_turns(split) == 1
    assert assistant_turns(conversation(2)) == 2


def test_side_request_gets_short_text(client: TestClient) -> None:
    blocks, delta = blocks_of(ask(client, conversation(1), tools=False))
    assert blocks == [{"type": "text", "text": SIDE_REQUEST_TEXT, "_json": ""}]
    assert delta["delta"]["stop_reason"] == "end_turn"


def test_ids_unique_across_identical_requests(client: TestClient) -> None:
    message_ids: set[str] = set()
    tool_ids: set[str] = set()
    for _ in range(30):
        events = ask(client, conversation(0))
        message_ids.add(events[0][1]["message"]["id"])
        blocks, _ = blocks_of(events)
        tool_ids.update(b["id"] for b in blocks)
        message_ids.add(ask(client, conversation(0), stream=False)["id"])
    assert len(message_ids) == 60
    assert len(tool_ids) == 60


def test_non_streaming_response(client: TestClient) -> None:
    message = ask(client, conversation(0), stream=False)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["stop_reason"] == "tool_use"
    assert message["content"][0]["input"]["command"] == "echo hello > /ws/out.txt"
    assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0


def test_count_tokens_health_and_errors(client: TestClient) -> None:
    counted = client.post(
        "/v1/messages/count_tokens?beta=true", json={"model": PINNED, "messages": conversation(3)}
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 10
    health = client.get("/")
    assert health.json()["status"] == "ok" and health.json()["turns"] == 3
    missing = client.get("/v1/models")
    assert missing.status_code == 404
    assert missing.json()["type"] == "error" and missing.json()["error"]["type"] == "not_found_error"
    bad = client.post("/v1/messages", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_subagent_conversation_gets_a_final_text(client: TestClient) -> None:
    main_first = ask(client, conversation(0))
    assert blocks_of(main_first)[0][0]["name"] == "Bash"
    subagent = [{"role": "user", "content": [{"type": "text", "text": "list files (subagent prompt)"}]}]
    blocks, delta = blocks_of(ask(client, subagent))
    assert blocks[0]["text"] == SUBAGENT_TEXT and delta["delta"]["stop_reason"] == "end_turn"
    # The main thread goes on where it was, even when its first message gains a cache_control marker.
    marked = conversation(1)
    marked[0] = {
        "role": "user",
        "content": [{"type": "text", "text": "do it", "cache_control": {"type": "ephemeral"}}],
    }
    assert blocks_of(ask(client, marked))[0][0]["name"] == "Edit"
