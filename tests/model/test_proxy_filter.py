"""The proxy is no way out: requests that would make the upstream reach out are refused before they
leave the host, count_tokens is filtered and audited like Messages, and what the proxy holds from the
sandbox is bounded (its body cap, and its memory, measured on a real process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from corral.audit.timeline import entry
from corral.model.proxy import ModelProxy, Upstream

from .conftest import PINNED, RUN_TOKEN, SMALL, FakeUpstream, RecordingSink, sse_bytes, wait_for
from .test_proxy import TOOL_STREAM, auth, body

ATTACKER = "https://attacker.example/collect"


@pytest.fixture
def proxied(sink: RecordingSink, fake_upstream: FakeUpstream) -> Iterator[str]:
    proxy = ModelProxy(
        RUN_TOKEN, {PINNED, SMALL}, Upstream.anthropic("sk-ant-canary-x", fake_upstream.url), sink
    )
    port = proxy.serve_tcp()
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    yield f"http://127.0.0.1:{port}"
    proxy.stop()


def escape(kind: str) -> dict[str, Any]:
    request = body()
    image_by_url = {"type": "image", "source": {"type": "url", "url": ATTACKER}}
    if kind == "web_fetch":
        request["tools"].append({"type": "web_fetch_20250910", "name": "web_fetch"})
    elif kind == "web_search":
        request["tools"].append({"type": "web_search_20250305", "name": "web_search", "max_uses": 3})
    elif kind == "code_execution":
        request["tools"].append({"type": "code_execution_20250825", "name": "code_execution"})
    elif kind == "mcp_servers":
        request["mcp_servers"] = [{"type": "url", "url": ATTACKER, "name": "evil"}]
    elif kind == "container":
        request["container"] = "container_011"
    elif kind == "image_url":
        request["messages"][0]["content"] = [image_by_url, {"type": "text", "text": "what is this?"}]
    elif kind == "document_file":
        request["messages"][0]["content"] = [
            {"type": "document", "source": {"type": "file", "file_id": "f1"}}
        ]
    elif kind == "nested_image_url":
        request["messages"][2]["content"][0]["content"] = [{"type": "text", "text": "shot"}, image_by_url]
    return request


ESCAPES = [
    ("web_fetch", "tool web_fetch of type web_fetch_20250910 is a server tool"),
    ("web_search", "tool web_search of type web_search_20250305 is a server tool"),
    ("code_execution", "tool code_execution of type code_execution_20250825 is a server tool"),
    ("mcp_servers", "request key mcp_servers is not allowed through the proxy"),
    ("container", "request key container is not allowed through the proxy"),
    ("image_url", "messages[0]: image source of type url is refused"),
    ("document_file", "messages[0]: document source of type file is refused"),
    ("nested_image_url", "messages[2]: image source of type url is refused"),
]


@pytest.mark.parametrize("path", ["/v1/messages?beta=true", "/v1/messages/count_tokens?beta=true"])
@pytest.mark.parametrize(("kind", "reason"), ESCAPES, ids=[k for k, _ in ESCAPES])
def test_requests_that_reach_out_are_refused(
    proxied: str, sink: RecordingSink, fake_upstream: FakeUpstream, path: str, kind: str, reason: str
) -> None:
    response = httpx.post(proxied + path, json=escape(kind), headers=auth())
    assert response.status_code == 400
    answer = response.json()
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["message"].startswith(f"corral: {reason}")
    (refused,) = sink.of("model.refused")
    assert refused.request_model == PINNED and reason in refused.reason
    assert fake_upstream.requests == [] and sink.of("model.request") == []


def test_betas_outside_the_allow_list_are_dropped_and_recorded(
    proxied: str, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    headers = {
        **auth(),
        "anthropic-beta": "claude-code-20250219,mcp-client-2025-04-04, files-api-2025-04-14,"
        "interleaved-thinking-2025-05-14",
    }
    response = httpx.post(f"{proxied}/v1/messages?beta=true&via=x", json=body(), headers=headers)
    assert response.status_code == 200
    (received,) = fake_upstream.requests
    assert received["headers"]["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert received["query"] == "beta=true"
    (request,) = sink.of("model.request")
    assert request.dropped_betas == ["mcp-client-2025-04-04", "files-api-2025-04-14"]
    only_bad = httpx.post(
        f"{proxied}/v1/messages", json=body(), headers={**auth(), "anthropic-beta": "web-fetch-2025-09-10"}
    )
    assert only_bad.status_code == 200
    assert "anthropic-beta" not in fake_upstream.requests[1]["headers"]
    assert fake_upstream.requests[1]["query"] == ""


def test_count_tokens_is_audited_like_messages(
    proxied: str, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.json_body = {"input_tokens": 1234}
    response = httpx.post(f"{proxied}/v1/messages/count_tokens?beta=true", json=body(), headers=auth())
    assert response.status_code == 200 and response.json() == {"input_tokens": 1234}
    (request,) = sink.of("model.request")
    (counted,) = sink.of("model.response")
    assert request.operation == counted.operation == "count_tokens"
    assert request.exchange_id == counted.exchange_id and "2 failed" in request.last_user
    assert counted.input_tokens == 1234 and counted.output_tokens == 0
    assert counted.model_dump(by_alias=True)["gen_ai.operation.name"] == "count_tokens"
    # The timeline says which is which: a count is not a generation.
    assert entry(request).summary.startswith(f"{PINNED} (count_tokens): 3 messages, 1 tools")
    assert entry(counted).summary == "count_tokens: 1234 input tokens"


def test_body_over_the_cap_is_refused_unread(sink: RecordingSink, fake_upstream: FakeUpstream) -> None:
    cap = 64 * 1024
    proxy = ModelProxy(
        RUN_TOKEN, {PINNED}, Upstream.anthropic("k", fake_upstream.url), sink, max_body_bytes=cap
    )
    port = proxy.serve_tcp()
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    try:
        url = f"http://127.0.0.1:{port}/v1/messages"
        big = body()
        big["messages"][0]["content"] = "x" * cap
        declared = httpx.post(url, content=json.dumps(big).encode(), headers=auth())

        def chunks() -> Iterator[bytes]:  # no Content-Length: the proxy has to count
            data = json.dumps(big).encode()
            for i in range(0, len(data), 4096):
                yield data[i : i + 4096]

        streamed = httpx.post(url, content=chunks(), headers=auth())
        just_under = body()
        just_under["messages"][0]["content"] = "x" * (cap - len(json.dumps(body())) - 100)
        fits = httpx.post(url, json=just_under, headers=auth())
    finally:
        proxy.stop()
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json() == {
            "type": "error",
            "error": {
                "type": "request_too_large",
                "message": f"corral: the request body is over the proxy's limit of {cap} bytes",
            },
        }
    assert fits.status_code == 200
    assert [r.reason for r in sink.of("model.refused")] == [declared.json()["error"]["message"]] * 2
    assert len(fake_upstream.requests) == 1


PROXY_PROCESS = textwrap.dedent(
    """
    import sys
    from corral.model.budget import Budget, BudgetLimits
    from corral.model.playbook import Playbook
    from corral.model.proxy import ModelProxy, Upstream

    class Sink:
        def emit(self, event, *, durable=False):
            print(event.kind, flush=True)
            return event

        def register_secret(self, name, value):
            pass

    if len(sys.argv) > 3:
        upstream = Upstream.anthropic("sk-ant-canary-x", sys.argv[3])
    else:
        upstream = Upstream.scripted(Playbook.from_text("turns: [{text: hi}]", "p.yaml"), "/w")
    # What is measured is memory under many requests at once, not the run's concurrency limit.
    budget = Budget(BudgetLimits(max_concurrent=64))
    proxy = ModelProxy(sys.argv[1], {sys.argv[2]}, upstream, Sink(), budget=budget)
    print(proxy.serve_tcp(), flush=True)
    sys.stdin.read()
    proxy.stop()
    """
)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def proxy_process(*upstream_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PROXY_PROCESS, RUN_TOKEN, PINNED, *upstream_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def test_memory_stays_flat_whatever_the_body_size() -> None:
    """A 1 GiB body streamed at a proxy process: it is refused and the process's peak RSS grows by
    less than a fixed bound (the 32 MiB cap plus slack), where it used to hold the whole body."""
    proc = proxy_process()
    assert proc.stdout is not None and proc.stdin is not None
    try:
        port = int(proc.stdout.readline())
        # Warm the request path first, so the baseline includes what any request costs.
        warm = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body(), headers=auth())
        assert warm.status_code == 200
        before = peak_rss_kib(proc.pid)
        total = 1024 * 1024 * 1024
        status, answer, sent = stream_chunked(port, total=total)
        head_status, head_sent = stream_headers(port, total=total // 2)
        grown_mib = (peak_rss_kib(proc.pid) - before) / 1024
    finally:
        proc.stdin.close()
        proc.wait(30)
    print(
        f"peak RSS grew by {grown_mib:.1f} MiB; sent {sent >> 20} MiB of body, {head_sent >> 20} MiB of head"
    )
    assert grown_mib < 96, f"the proxy's peak RSS grew by {grown_mib:.0f} MiB for two refused requests"
    assert status == 413 and answer["error"]["type"] == "request_too_large"
    assert sent < total, "the proxy read the whole body instead of refusing it at the cap"
    assert head_status == 431 and head_sent < total // 2, "the proxy read an endless head"
    assert proc.stdout.read().split() == ["model.request", "model.response", "model.refused"]


def test_concurrent_large_requests_are_buffered_one_at_a_time(fake_upstream: FakeUpstream) -> None:
    """Ten 24 MiB requests at once, all held open mid-stream by the upstream: the proxy process holds
    a few copies of one body (raw, parsed, serialized), not of ten. Measured: 150-180 MiB for ten or
    twenty requests here."""
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)
    fake_upstream.gate_after = 1
    big = body()
    big["messages"][0]["content"] = "x" * (24 * 1024 * 1024)
    payload = json.dumps(big).encode()
    proc = proxy_process(fake_upstream.url)
    assert proc.stdout is not None and proc.stdin is not None
    started: list[bytes] = []
    try:
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}/v1/messages"
        assert httpx.post(url, json=body(), headers=auth(), timeout=60).status_code == 200  # warm
        fake_upstream.requests.clear()
        before = peak_rss_kib(proc.pid)

        def one() -> None:
            with httpx.stream("POST", url, content=payload, headers=auth(), timeout=120) as response:
                chunks = response.iter_bytes()
                started.append(next(chunks))
                for _ in chunks:
                    pass

        with ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(one) for _ in range(10)]
            wait_for(lambda: len(started) == 10, timeout=120)
            grown_mib = (peak_rss_kib(proc.pid) - before) / 1024
            fake_upstream.gate.set()
            for future in futures:
                future.result()
    finally:
        fake_upstream.gate.set()
        proc.stdin.close()
        proc.wait(30)
    print(f"peak RSS grew by {grown_mib:.0f} MiB for ten concurrent 24 MiB requests")
    assert len(fake_upstream.requests) == 10 and all(c.startswith(b"event: message_start") for c in started)
    assert grown_mib < 256, f"the proxy's peak RSS grew by {grown_mib:.0f} MiB"


def send_until_hangup(
    port: int, opening: bytes, frame: bytes, closing: bytes, total: int
) -> tuple[bytes, int]:
    """Send `opening`, then `frame` until `total` bytes or until the proxy hangs up, then `closing`.
    Returns what the proxy answered and how many frame bytes went out."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(opening)
        sent = 0
        try:
            while sent < total:
                conn.sendall(frame)
                sent += len(frame)
            conn.sendall(closing)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy answered and closed: read what it said
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw) < raw.index(b"\r\n\r\n") + 4 + content_length(raw):
            data = conn.recv(65536)
            if not data:
                break
            raw += data
    return raw, sent


def stream_chunked(port: int, *, total: int) -> tuple[int, dict[str, Any], int]:
    """POST about `total` bytes of body with chunked encoding: the status and JSON of the answer, and
    the bytes sent."""
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {RUN_TOKEN}\r\n"
        "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * (1024 * 1024)
    prefix = json.dumps({"model": PINNED, "max_tokens": 1, "messages": [{"role": "user", "content": ""}]})
    opening = prefix[: prefix.index('""') + 1].encode()  # the content string left open
    raw, sent = send_until_hangup(
        port,
        head.encode() + f"{len(opening):x}\r\n".encode() + opening + b"\r\n",
        f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n",
        b"0\r\n\r\n",
        total,
    )
    header, _, payload = raw.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload[: content_length(raw)]), sent


def stream_headers(port: int, *, total: int) -> tuple[int, int]:
    """Send a request head of about `total` bytes: the status of the answer and the bytes sent."""
    opening = f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {RUN_TOKEN}\r\n".encode()
    raw, sent = send_until_hangup(port, opening, b"x-pad: " + b"a" * 65536 + b"\r\n", b"\r\n", total)
    return int(raw.split()[1]) if raw else 0, sent


def content_length(raw: bytes) -> int:
    for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
