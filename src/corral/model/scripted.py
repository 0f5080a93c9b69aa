"""The scripted model: an Anthropic Messages API server that plays a playbook.

It is what the demo, the tests and users' dry runs talk to instead of a live model. It behaves as
DESIGN.md § Contracts (Playbook) and § Seams (Claude Code's wire behaviour) specify:

- a request that holds k assistant messages is answered with turn k;
- a request that carries no tools (a side request, such as title generation) gets a short text;
- a subagent's request (another conversation, with tools) gets a short final text;
- once the turns run out, a final text with `end_turn`;
- every response has a fresh `msg_` id and every tool_use a fresh `toolu_` id, because Claude Code
  drops a response whose id it has seen and asks again, forever.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.model.playbook import Playbook, TextTurn, ToolUseTurn

SIDE_REQUEST_TEXT = "corral scripted run"
FINAL_TEXT = "The playbook is complete."
SUBAGENT_TEXT = "Nothing to do: this scripted run plays its playbook in the main conversation only."
_FRAGMENT = 48
"""Characters per text or input_json delta: small enough that a tool input spans several fragments,
as it does from the real API, so clients that mishandle fragments fail here and not in production."""


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def new_tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex}"


def estimate_tokens(text: str) -> int:
    """A plausible token count (about four characters per token); never zero."""
    return max(1, len(text) // 4)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The Anthropic error envelope, which Claude Code and the SDKs parse."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


async def anthropic_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (404, 405, 400) in the Anthropic envelope instead of plain text."""
    assert isinstance(exc, HTTPException)
    kind = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error"}
    message = exc.detail if exc.status_code == 400 else f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(error_body(kind.get(exc.status_code, "api_error"), message), exc.status_code)


def assistant_turns(messages: list[Any]) -> int:
    """How many assistant turns a request holds. Consecutive assistant messages count once: a client
    may split one response's blocks across messages, and that is still one turn of the playbook."""
    count = 0
    previous = None
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "assistant" and previous != "assistant":
            count += 1
        previous = role
    return count


def conversation_key(messages: Any) -> str:
    """What identifies a conversation: the text of its first user message. Only text, because Claude
    Code moves `cache_control` markers between requests of the same conversation."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
        return ""
    content = messages[0].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


class MainThread:
    """Tells the main conversation from subagents (Claude Code's Agent tool). The first request with
    tools is the main thread; a tool-bearing request from another conversation is a subagent, which
    gets a short final text instead of replaying the playbook from turn 0 (and spawning itself again)."""

    def __init__(self) -> None:
        self.key: str | None = None

    def is_main(self, body: dict[str, Any]) -> bool:
        key = conversation_key(body.get("messages"))
        if self.key is None:
            self.key = key
        return key == self.key


def choose_content(
    playbook: Playbook, body: dict[str, Any], main: MainThread | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The content blocks and stop_reason that answer `body`. Ids are fresh on every call."""
    if not body.get("tools"):
        return [{"type": "text", "text": SIDE_REQUEST_TEXT}], "end_turn"
    if main is not None and not main.is_main(body):
        return [{"type": "text", "text": SUBAGENT_TEXT}], "end_turn"
    messages = body.get("messages")
    k = assistant_turns(messages if isinstance(messages, list) else [])
    if k >= len(playbook.turns):
        return [{"type": "text", "text": FINAL_TEXT}], "end_turn"
    turn = playbook.turns[k]
    if isinstance(turn, TextTurn):
        return [{"type": "text", "text": turn.text}], "end_turn"
    assert isinstance(turn, ToolUseTurn)
    blocks = [
        {"type": "tool_use", "id": new_tool_use_id(), "name": call.name, "input": call.input}
        for call in turn.tool_use
    ]
    return blocks, "tool_use"


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _chunks(text: str) -> Iterator[str]:
    for i in range(0, len(text), _FRAGMENT):
        yield text[i : i + _FRAGMENT]


def sse_events(
    message_id: str, model: str, blocks: list[dict[str, Any]], stop_reason: str, input_tokens: int
) -> Iterator[bytes]:
    """The event stream the Messages API sends for one response, block by block."""
    output_tokens = estimate_tokens(json.dumps(blocks))
    yield _sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        },
    )
    yield _sse("ping", {"type": "ping"})
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"])]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": c}
                for c in _chunks(json.dumps(block["input"], separators=(",", ":")))
            ]
        yield _sse(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
        )
        for delta in deltas:
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


async def _read_json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise HTTPException(400, "request body must be a JSON object")
    return body


def scripted_app(playbook: Playbook, workspace: str) -> Starlette:
    """An ASGI app answering the Messages API from `playbook`, with `{workspace}` substituted."""
    script = playbook.for_workspace(workspace)
    main = MainThread()

    async def messages(request: Request) -> Response:
        body = await _read_json(request)
        model = str(body.get("model", ""))
        blocks, stop_reason = choose_content(script, body, main)
        message_id = new_message_id()
        input_tokens = estimate_tokens(
            json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
        )
        if body.get("stream"):

            async def stream() -> AsyncIterator[bytes]:
                for chunk in sse_events(message_id, model, blocks, stop_reason, input_tokens):
                    yield chunk

            return StreamingResponse(
                stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        return JSONResponse(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": estimate_tokens(json.dumps(blocks))},
            }
        )

    async def count_tokens(request: Request) -> Response:
        body = await _read_json(request)
        text = json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
        text += json.dumps(body.get("tools", []))
        return JSONResponse({"input_tokens": estimate_tokens(text)})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "model": "scripted", "playbook": script.source, "turns": len(script.turns)}
        )

    return Starlette(
        routes=[
            Route("/", health, methods=["GET"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        ],
        exception_handlers={HTTPException: anthropic_http_error},
    )
