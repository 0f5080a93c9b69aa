from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.errors import ModelError, ServeError
from corral.model.playbook import Playbook
from corral.model.proxy import ModelProxy, Upstream

from .conftest import PINNED, RUN_TOKEN, SMALL, FakeUpstream, RecordingSink, parse_sse, sse_bytes, wait_for

PLAYBOOK = Playbook.from_text(
    'turns: [{tool_use: [{name: Bash, input: {command: "echo hi > {workspace}/x"}}]}]', "p.yaml"
)
TOOL_STREAM = [
    {"type": "message_start", "message": {"id": "msg_up1", "model": PINNED, "usage": {"input_tokens": 7}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Running it."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_up", "name": "Bash", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"command'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '": "ls -la"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 21}},
    {"type": "message_stop"},
]


def body(model: str = PINNED, *, stream: bool = True) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 100,
        "stream": stream,
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "fix the bug"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t0", "name": "Bash", "input": {}}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t0", "content": "2 failed"}],
            },
        ],
    }


def auth(token: str = RUN_TOKEN) -> dict[str, str]:
    return {"x-api-key": token, "anthropic-version": "2023-06-01"}


@pytest.fixture
def serve(sink: RecordingSink) -> Iterator[Any]:
    proxies: list[ModelProxy] = []

    def start(upstream: Upstream) -> tuple[ModelProxy, str]:
        proxy = ModelProxy(RUN_TOKEN, {PINNED, SMALL}, upstream, sink)
        proxies.append(proxy)
        return proxy, f"http://127.0.0.1:{proxy.serve_tcp()}"

    yield start
    for proxy in proxies:
        proxy.stop()


def test_unknown_or_missing_token_is_401(
    serve: Any, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    _, url = serve(Upstream.anthropic("sk-ant-canary-x", fake_upstream.url))
    other_run = "corral-run-" + "x" * 32  # another run's placeholder, or one kept from an ended run
    tried = ({"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}, {}, {"x-api-key": other_run})
    for headers in tried:
        response = httpx.post(f"{url}/v1/messages", json=body(), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    assert fake_upstream.requests == [] and sink.of("model.request") == []
    # Each refusal is on the run's record, saying what was sent but never the token itself.
    assert [(e.reason, e.request_model) for e in sink.of("model.refused")] == [
        ("corral: unknown run token (not a run token)", ""),
        ("corral: unknown run token (not a run token)", ""),
        ("corral: unknown run token (none sent)", ""),
        ("corral: unknown run token (a run token, not this run's)", ""),
    ]
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    ok = httpx.post(f"{url}/v1/messages", json=body(), headers={"authorization": f"Bearer {RUN_TOKEN}"})
    assert ok.status_code == 200


def test_unpinned_model_refused_and_recorded(
    serve: Any, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    _, url = serve(Upstream.anthropic("sk-ant-canary-x", fake_upstream.url))
    response = httpx.post(
        f"{url}/v1/messages?beta=true", json=body("claude-opus-4-1-20250805"), headers=auth()
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "corral: model claude-opus-4-1-20250805 is not pinned for this run "
            f"(pinned: {SMALL}, {PINNED})",
        },
    }
    count = httpx.post(f"{url}/v1/messages/count_tokens", json=body("claude-3-haiku"), headers=auth())
    assert count.status_code == 400
    refused = sink.of("model.refused")
    assert [r.request_model for r in refused] == ["claude-opus-4-1-20250805", "claude-3-haiku"]
    assert "not pinned" in refused[0].reason
    assert fake_upstream.requests == [] and sink.of("model.request") == []


def test_real_key_injected_placeholder_stripped(
    serve: Any, sink: RecordingSink, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller reads the host env; the autouse fixture set ANTHROPIC_API_KEY to a canary.
    canary = os.environ["ANTHROPIC_API_KEY"]
    assert canary.startswith("sk-ant-canary-")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_upstream.url)
    upstream = Upstream.select(os.environ, playbook=None, workspace="/workspace")
    assert upstream.api_key == canary and upstream.base_url == fake_upstream.url
    _, url = serve(upstream)
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    headers = {
        **auth(),
        "authorization": f"Bearer {RUN_TOKEN}",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        "cookie": "session=abc",
        "x-stainless-os": "Linux",
    }
    response = httpx.post(f"{url}/v1/messages?beta=true", json=body(), headers=headers)
    assert response.status_code == 200
    (received,) = fake_upstream.requests
    got = received["headers"]
    assert got["x-api-key"] == canary
    assert "authorization" not in got and "cookie" not in got and "x-stainless-os" not in got
    assert got["anthropic-version"] == "2023-06-01"
    assert got["anthropic-beta"] == headers["anthropic-beta"]
    assert received["query"] == "beta=true" and received["body"] == body()
    assert RUN_TOKEN not in json.dumps(received)
    assert canary not in response.text
    assert sink.secrets["ANTHROPIC_API_KEY"] == canary


def test_stream_passes_through_unbuffered(
    serve: Any, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    proxy, url = serve(Upstream.anthropic("sk-ant-canary-x", fake_upstream.url))
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    fake_upstream.gate_after = 3  # hold the stream after the first text delta
    seen: list[str] = []
    with httpx.stream("POST", f"{url}/v1/messages", json=body(), headers=auth()) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"] == "req_fake_1"
        raw = b""
        for chunk in response.iter_bytes():
            raw += chunk
            seen = [name for name, _ in parse_sse(raw[: raw.rfind(b"\n\n") + 2])]
            if len(seen) == 3 and not fake_upstream.gate.is_set():
                # The client holds the first three events while the upstream is still blocked.
                assert not fake_upstream.finished.is_set()
                fake_upstream.gate.set()
    assert fake_upstream.gate_released is True, "the client never saw the first events before the gate"
    assert [name for name, _ in parse_sse(raw)] == [e["type"] for e in TOOL_STREAM]
    assert proxy.exchanges == 1


def test_exchange_recorded_with_reassembled_response(
    serve: Any, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    _, url = serve(Upstream.anthropic("sk-ant-canary-x", fake_upstream.url))
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    httpx.post(f"{url}/v1/messages", json=body(), headers=auth())
    (request,) = sink.of("model.request")
    assert (request.request_model, request.messages, request.tools, request.stream) == (PINNED, 3, 1, True)
    assert "2 failed" in request.last_user and "tool_result" in request.last_user
    (response,) = sink.of("model.response")
    assert response.exchange_id == request.exchange_id
    assert response.response_id == "msg_up1" and response.stop_reason == "tool_use"
    assert (response.input_tokens, response.output_tokens) == (7, 21)
    assert response.text == "Running it."
    assert [(t.id, t.name, t.input) for t in response.tool_uses] == [
        ("toolu_up", "Bash", {"command": "ls -la"})
    ]
    assert response.latency_ms > 0
    # The alias form is what the audit stores.
    assert response.model_dump(by_alias=True)["gen_ai.usage.output_tokens"] == 21


def test_non_streaming_and_upstream_errors(
    serve: Any, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    _, url = serve(Upstream.anthropic("sk-ant-canary-x", fake_upstream.url))
    fake_upstream.json_body = {
        "id": "msg_j",
        "type": "message",
        "model": PINNED,
        "content": [{"type": "tool_use", "id": "toolu_j", "name": "Read", "input": {"file_path": "/a"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    response = httpx.post(f"{url}/v1/messages", json=body(stream=False), headers=auth())
    assert response.json()["id"] == "msg_j"
    fake_upstream.json_body = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    fake_upstream.status = 529
    overloaded = httpx.post(f"{url}/v1/messages", json=body(stream=False), headers=auth())
    assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"
    first, second = sink.of("model.response")
    assert first.tool_uses[0].input == {"file_path": "/a"} and first.stop_reason == "tool_use"
    assert second.stop_reason == "error" and "overloaded_error: busy" in second.text


def test_unreachable_upstream_is_502_and_recorded(serve: Any, sink: RecordingSink) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    _, url = serve(Upstream.anthropic("sk-ant-canary-x", f"http://127.0.0.1:{port}"))
    response = httpx.post(f"{url}/v1/messages", json=body(), headers=auth())
    assert response.status_code == 502 and response.json()["error"]["type"] == "api_error"
    (recorded,) = sink.of("model.response")
    assert recorded.stop_reason == "error" and "ConnectError" in recorded.text
    assert httpx.get(f"{url}/v1/models", headers=auth()).json()["error"]["type"] == "not_found_error"


def test_scripted_upstream_on_unix_socket(sink: RecordingSink, short_tmp: Path) -> None:
    path = short_tmp / "model.sock"
    proxy = ModelProxy(RUN_TOKEN, {PINNED, SMALL}, Upstream.scripted(PLAYBOOK, "/workspace"), sink)
    try:
        assert proxy.serve_unix(path) == path
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o666
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://model") as client:
            events = parse_sse(
                client.post("/v1/messages?beta=true", json=body(SMALL), headers=auth()).content
            )
            assert client.get("/").json()["upstream"] == "scripted:p.yaml"
        assert events[0][1]["message"]["id"].startswith("msg_")
        second = ModelProxy(RUN_TOKEN, {PINNED}, Upstream.scripted(PLAYBOOK, "/w"), sink)
        with pytest.raises(ServeError, match="in use"):
            second.serve_unix(path)
    finally:
        proxy.stop()
    assert not path.exists()
    (response,) = sink.of("model.response")
    # turn 1 of a one-turn playbook: the final text.
    assert response.stop_reason == "end_turn" and response.request_model == SMALL


def test_stale_socket_reused_and_restart(sink: RecordingSink, short_tmp: Path) -> None:
    path = short_tmp / "model.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing listens: what a killed run leaves
    proxy = ModelProxy(RUN_TOKEN, {PINNED}, Upstream.scripted(PLAYBOOK, "/w"), sink)
    proxy.serve_unix(path)
    with pytest.raises(ServeError, match="already serving"):
        proxy.serve_tcp()
    proxy.stop()
    proxy.stop()  # idempotent
    port = proxy.serve_tcp()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/").json()["status"] == "ok"
    finally:
        proxy.stop()


def test_upstream_select() -> None:
    assert Upstream.select({}, playbook=PLAYBOOK, workspace="/w").name == "scripted:p.yaml"
    real = Upstream.select({"ANTHROPIC_API_KEY": "sk-ant-canary-1"}, playbook=None, workspace="/w")
    assert real.base_url == "https://api.anthropic.com" and real.api_key == "sk-ant-canary-1"
    with pytest.raises(ModelError, match="ANTHROPIC_API_KEY is not set"):
        Upstream.select({"ANTHROPIC_BASE_URL": "http://x"}, playbook=None, workspace="/w")


def test_client_hangup_mid_stream_still_recorded(
    serve: Any, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    _, url = serve(Upstream.anthropic("sk-ant-canary-x", fake_upstream.url))
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    fake_upstream.gate_after = 3
    with httpx.stream("POST", f"{url}/v1/messages", json=body(), headers=auth()) as response:
        raw = b""
        for chunk in response.iter_bytes():
            raw += chunk
            if raw.count(b"\n\n") >= 3:
                break  # hang up while the upstream is still mid-response
    # Recorded on the hang-up itself, not when the upstream eventually finishes.
    wait_for(lambda: bool(sink.of("model.response")))
    fake_upstream.gate.set()
    (recorded,) = sink.of("model.response")
    assert recorded.response_id == "msg_up1" and recorded.text == "Running it."
    assert recorded.stop_reason is None  # the stream never reached message_delta


def test_upstream_dying_mid_stream_ends_with_an_error_event(
    serve: Any, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    _, url = serve(Upstream.anthropic("sk-ant-canary-x", fake_upstream.url))
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    fake_upstream.fail_after = 3
    response = httpx.post(f"{url}/v1/messages", json=body(), headers=auth())
    events = parse_sse(response.content)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1]["error"]["type"] == "api_error"
    (recorded,) = sink.of("model.response")
    assert recorded.stop_reason == "error" and recorded.text.startswith("Running it.")


def test_user_turn_summary_leaves_out_system_reminders() -> None:
    from corral.model.proxy import _summarise_user_turn

    messages = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "<system-reminder>\n# Environment\ncwd: /workspace\n</system-reminder>",
                },
                {"type": "text", "text": "Fix the failing test"},
            ],
        }
    ]
    assert _summarise_user_turn(messages) == "Fix the failing test"
    text_only = [{"role": "user", "content": "<system-reminder>x</system-reminder>\nhello"}]
    assert _summarise_user_turn(text_only) == "hello"
