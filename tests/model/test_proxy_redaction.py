"""The proxy streams the model's answer to Claude Code unbuffered and unchanged, and what it records is
redacted even when a secret is split across two stream chunks (anywhere in the bytes, mid-line
included) or across two text or tool-input deltas, at every offset. The upstream is an in-process
app whose chunks reach the proxy exactly as split; the sink is a real audit recorder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from corral.audit.log import AuditLog
from corral.events import ModelResponse
from corral.model.proxy import SCRIPTED_BASE_URL, ModelProxy, Upstream
from corral.settings import Settings

from .conftest import PINNED, SMALL
from .test_proxy import auth, body

KEY = "sk-ant-spl1t>>>???~~~/+v"
"""The host's model key, echoed back by the upstream (as a misbehaving or hostile endpoint could)."""
TOKEN = "gw-cred=ab/cd+ef"
"""A gateway credential this run resolved (registered with the run's sink)."""


def _events(text_pieces: list[str], json_pieces: list[str]) -> list[dict[str, Any]]:
    start = {"id": "msg_split", "type": "message", "role": "assistant", "model": PINNED, "content": []}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**start, "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        for p in text_pieces
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}},
        },
    ]
    events += [
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": p}}
        for p in json_pieces
    ]
    events += [
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]
    return events


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


class SplitUpstream:
    """Answers each request with the next queued list of byte chunks, each sent as its own body part."""

    def __init__(self) -> None:
        self.queue: list[list[bytes]] = []

    def app(self) -> Starlette:
        async def messages(request: Request) -> Response:
            await request.body()
            chunks = self.queue.pop(0)

            async def stream() -> Any:
                for chunk in chunks:
                    yield chunk

            return StreamingResponse(stream(), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


@pytest.fixture
def proxied() -> Iterator[tuple[SplitUpstream, httpx.Client, AuditLog, Any]]:
    upstream = SplitUpstream()
    transport = httpx.ASGITransport(app=upstream.app())
    with AuditLog.open(Settings(), None, background=False) as audit:
        recorder = audit.for_run("r-splitchunk1")
        recorder.register_secret("GATEWAY_TOKEN", TOKEN)
        target = Upstream(base_url=SCRIPTED_BASE_URL, api_key=KEY, transport=transport, name="split")
        proxy = ModelProxy("corral-run-split-token", {PINNED, SMALL}, target, recorder)
        port = proxy.serve_tcp()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                yield upstream, client, audit, recorder
        finally:
            proxy.stop()
            recorder.close()


def _ask(upstream: SplitUpstream, client: httpx.Client, chunks: list[bytes]) -> bytes:
    upstream.queue.append(chunks)
    reply = client.post("/v1/messages", json=body(), headers=auth("corral-run-split-token"))
    assert reply.status_code == 200, reply.text
    return reply.content


def _recorded(audit: AuditLog, recorder: Any) -> list[ModelResponse]:
    recorder.sync()
    return [e for e in audit.read("r-splitchunk1") if isinstance(e, ModelResponse)]


def test_a_secret_split_across_two_text_deltas_at_every_offset_is_recorded_redacted(
    proxied: tuple[SplitUpstream, httpx.Client, AuditLog, Any],
) -> None:
    upstream, client, audit, recorder = proxied
    text = f"the key is {KEY} and {TOKEN}."
    offsets = range(text.index(KEY), text.index(TOKEN) + len(TOKEN) + 1)
    for cut in offsets:
        sent = _sse(_events([text[:cut], text[cut:]], ['{"command":"true"}']))
        assert _ask(upstream, client, [sent]) == sent  # Claude Code gets the stream as it came
    responses = _recorded(audit, recorder)
    assert len(responses) == len(offsets)
    for response in responses:
        assert response.text == "the key is [secret:ANTHROPIC_API_KEY] and [secret:GATEWAY_TOKEN]."


def test_a_secret_split_across_two_tool_input_deltas_at_every_offset_is_recorded_redacted(
    proxied: tuple[SplitUpstream, httpx.Client, AuditLog, Any],
) -> None:
    upstream, client, audit, recorder = proxied
    whole = json.dumps({"command": f"curl -H 'x-api-key: {KEY}' https://example.invalid"})
    offsets = range(whole.index(KEY), whole.index(KEY) + len(KEY) + 1)
    for cut in offsets:
        _ask(upstream, client, [_sse(_events(["ok"], [whole[:cut], whole[cut:]]))])
    for response in _recorded(audit, recorder):
        (use,) = response.tool_uses
        assert use.input == {
            "command": "curl -H 'x-api-key: [secret:ANTHROPIC_API_KEY]' https://example.invalid"
        }


def test_a_secret_split_across_two_stream_chunks_at_every_byte_is_recorded_redacted(
    proxied: tuple[SplitUpstream, httpx.Client, AuditLog, Any],
) -> None:
    upstream, client, audit, recorder = proxied
    sent = _sse(_events([f"echo {KEY} {TOKEN}"], ['{"command":"true"}']))
    first = sent.index(KEY.encode())
    offsets = range(first - 1, sent.index(TOKEN.encode()) + len(TOKEN) + 2)
    for cut in offsets:
        assert _ask(upstream, client, [sent[:cut], sent[cut:]]) == sent
    responses = _recorded(audit, recorder)
    assert len(responses) == len(offsets)
    for response in responses:
        assert response.text == "echo [secret:ANTHROPIC_API_KEY] [secret:GATEWAY_TOKEN]"
    stored = "".join(row.data for row in audit.rows("r-splitchunk1"))
    for piece in (KEY, TOKEN, KEY[:12], KEY[12:], TOKEN[:8], TOKEN[8:]):
        assert piece not in stored
