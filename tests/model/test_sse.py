from __future__ import annotations

import json

from corral.model.sse import Reassembler, SseParser

from .conftest import sse_bytes

STREAM = sse_bytes(
    [
        {
            "type": "message_start",
            "message": {
                "id": "msg_abc",
                "model": "m",
                "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1},
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm, "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "ok"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "look."}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"comm'},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": 'and": "ls"}'},
        },
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}},
        {"type": "message_stop"},
    ]
)


def test_parser_survives_any_chunking() -> None:
    raw = b"".join(STREAM)
    whole = [e.event for e in SseParser().feed(raw)]
    parser = SseParser()
    bytewise = [e.event for i in range(len(raw)) for e in parser.feed(raw[i : i + 1])]
    assert whole == bytewise and len(whole) == len(STREAM)
    crlf = list(SseParser().feed(raw.replace(b"\n", b"\r\n")))
    assert [e.event for e in crlf] == whole


def test_reassembles_thinking_text_tools_tokens() -> None:
    reassembler = Reassembler()
    parser = SseParser()
    for chunk in STREAM:
        for event in parser.feed(chunk):
            reassembler.add(event)
    result = reassembler.finish()
    assert result.response_id == "msg_abc"
    assert result.thinking == "hmm, ok"
    assert result.text == "Let me look."
    assert [(t.id, t.name, t.input) for t in result.tool_uses] == [("toolu_1", "Bash", {"command": "ls"})]
    assert result.stop_reason == "tool_use"
    assert result.input_tokens == 15 and result.output_tokens == 42


def test_error_event_and_cut_off_tool_input() -> None:
    reassembler = Reassembler()
    raw = b"".join(STREAM[:14]) + b"".join(
        sse_bytes([{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}])
    )
    for event in SseParser().feed(raw):
        reassembler.add(event)
    result = reassembler.finish()
    assert result.stop_reason == "error"
    assert "overloaded_error: busy" in result.text
    assert result.tool_uses[0].input == {"_unparsed": '{"comm'}


def test_whole_message() -> None:
    reassembler = Reassembler()
    reassembler.add_message(
        {
            "id": "msg_x",
            "type": "message",
            "model": "m",
            "stop_reason": "end_turn",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "tool_use", "id": "t", "name": "Read", "input": {"a": 1}},
            ],
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
    )
    result = reassembler.finish()
    assert (result.text, result.stop_reason, result.input_tokens, result.output_tokens) == (
        "hi",
        "end_turn",
        3,
        4,
    )
    assert result.tool_uses[0].input == {"a": 1}
    assert json.loads(result.tool_uses[0].model_dump_json())["name"] == "Read"
