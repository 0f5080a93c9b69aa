"""Cassettes: built from recorded exchanges, written and read back, and played by the scripted
model's HTTP surface (JSON and SSE), side requests matched by kind rather than arrival order."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from corral.errors import PlaybookError
from corral.events import ModelRequest, ModelResponse, RunCreated, ToolResult, ToolUseBlock
from corral.model.cassette import EXHAUSTED_TEXT, Cassette, cassette_app, is_cassette_file
from corral.model.sse import Reassembler, SseParser

MODEL = "claude-sonnet-4-5-20250929"


def _exchange(exchange_id: str, messages: int, tools: int, **response: object) -> list[object]:
    request = ModelRequest.model_validate(
        {"gen_ai.request.model": MODEL, "exchange_id": exchange_id, "messages": messages, "tools": tools}
    )
    reply = ModelResponse.model_validate(
        {"gen_ai.request.model": MODEL, "exchange_id": exchange_id, **response}
    )
    return [request, reply]


def _recording() -> list[object]:
    created = RunCreated(
        task="fix it", repo="/r", base_commit="abc", branch="corral/r1", config_hash="h", model=MODEL,
        small_model="claude-haiku-4-5-20251001",
    )  # fmt: skip
    use = ToolUseBlock(id="toolu_1", name="Bash", input={"command": "pytest -q"})
    return [
        created,
        *_exchange(
            "e1", 1, 12, **{"gen_ai.response.id": "msg_1", "stop_reason": "tool_use", "tool_uses": [use]}
        ),
        *_exchange("side", 1, 0, **{"gen_ai.response.id": "msg_side", "text": "Fix title"}),
        ToolResult.model_validate(
            {"gen_ai.tool.name": "Bash", "gen_ai.tool.call.id": "toolu_1", "output": "1 failed"}
        ),
        *_exchange("e2", 3, 12, **{"gen_ai.response.id": "msg_2", "stop_reason": "end_turn", "text": "done"}),
        *_exchange("broken", 5, 12, stop_reason="error"),
    ]


def test_a_cassette_holds_the_recorded_exchanges_and_tool_results(tmp_path: Path) -> None:
    cassette = Cassette.from_events(_recording(), "r1")  # type: ignore[arg-type]
    assert (cassette.task, cassette.base_commit, cassette.model) == ("fix it", "abc", MODEL)
    assert [(e.main, e.messages, e.response_id) for e in cassette.exchanges] == [
        (True, 1, "msg_1"),
        (False, 1, "msg_side"),
        (True, 3, "msg_2"),
    ]  # the upstream failure was never a response, so it is not replayed
    assert cassette.exchanges[0].content == [
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "pytest -q"}}
    ]
    assert [(r.tool_name, r.output) for r in cassette.tool_results] == [("Bash", "1 failed")]
    path = tmp_path / "run.json"
    cassette.dump(path)
    assert is_cassette_file(path) and Cassette.load(path) == cassette
    (tmp_path / "bad.json").write_text(json.dumps({"format": "corral-cassette/1", "exchanges": 3}))
    with pytest.raises(PlaybookError, match="not a corral cassette"):
        Cassette.load(tmp_path / "bad.json")
    assert not is_cassette_file(tmp_path / "missing.json")


def test_the_player_answers_by_kind_and_position_then_says_it_is_exhausted() -> None:
    anyio.run(_play)


async def _play() -> None:
    app = cassette_app(Cassette.from_events(_recording(), "r1"))  # type: ignore[arg-type]
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client:

        async def ask(messages: int, with_tools: bool, stream: bool = False) -> httpx.Response:
            body: dict[str, object] = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}] * messages,
            }
            if with_tools:
                body["tools"] = tools
            body["stream"] = stream
            return await client.post("/v1/messages", json=body)

        # The main thread's second request arrives before the side request: still matched right.
        second = (await ask(3, True)).json()
        assert (second["id"], second["content"]) == ("msg_2", [{"type": "text", "text": "done"}])
        side = (await ask(1, False)).json()
        assert side["content"] == [{"type": "text", "text": "Fix title"}]
        streamed = await ask(1, True, stream=True)
        reassembler = Reassembler()
        for event in SseParser().feed(streamed.content):
            reassembler.add(event)
        result = reassembler.finish()
        assert result.response_id == "msg_1" and result.stop_reason == "tool_use"
        assert [(u.name, u.input) for u in result.tool_uses] == [("Bash", {"command": "pytest -q"})]
        extra = (await ask(5, True)).json()
        assert extra["content"] == [{"type": "text", "text": EXHAUSTED_TEXT}]
    assert app.state.player.unmatched == 1
