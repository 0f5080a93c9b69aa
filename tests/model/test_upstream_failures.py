"""The proxy's bound on a failing upstream (model/upstream_failures.py), against a loopback upstream:
retry-after is shortened, consecutive failures are counted, and past the bound nothing is forwarded.
A real run against a failing upstream: tests/faults/test_model_upstream.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from corral.model.proxy import ModelProxy, Upstream
from corral.model.upstream_failures import MAX_RETRY_AFTER_SECONDS

from .conftest import PINNED, RUN_TOKEN, SMALL, FakeUpstream, RecordingSink, sse_bytes
from .test_proxy import auth, body

OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
ANSWER = {
    "id": "msg_ok",
    "type": "message",
    "model": PINNED,
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


@pytest.fixture
def proxy(sink: RecordingSink, fake_upstream: FakeUpstream) -> Iterator[tuple[ModelProxy, str]]:
    served = ModelProxy(
        RUN_TOKEN, {PINNED, SMALL}, Upstream.anthropic("sk-ant-canary-x", fake_upstream.url), sink, retries=2
    )
    try:
        yield served, f"http://127.0.0.1:{served.serve_tcp()}"
    finally:
        served.stop()


def post(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", json=body(stream=False), headers=auth())


@pytest.mark.parametrize(
    ("header", "sent", "forwarded"),
    [
        ("retry-after", "3600", str(MAX_RETRY_AFTER_SECONDS)),
        ("retry-after", "2", "2"),
        ("retry-after", "Wed, 21 Oct 2037 07:28:00 GMT", str(MAX_RETRY_AFTER_SECONDS)),
        ("retry-after-ms", "900000", str(MAX_RETRY_AFTER_SECONDS * 1000)),
    ],
)
def test_retry_after_is_shortened_to_the_bound(
    proxy: tuple[ModelProxy, str], fake_upstream: FakeUpstream, header: str, sent: str, forwarded: str
) -> None:
    fake_upstream.json_body, fake_upstream.status = OVERLOADED, 429
    fake_upstream.headers = {header: sent}
    response = post(proxy[1])
    assert response.status_code == 429 and response.headers[header] == forwarded


def test_past_the_bound_nothing_is_forwarded_and_a_success_resets_the_count(
    proxy: tuple[ModelProxy, str], fake_upstream: FakeUpstream, sink: RecordingSink
) -> None:
    served, url = proxy
    fake_upstream.json_body, fake_upstream.status = OVERLOADED, 529
    assert [post(url).status_code for _ in range(2)] == [529, 529]
    fake_upstream.json_body, fake_upstream.status = ANSWER, 200
    assert post(url).status_code == 200  # the upstream recovered: the count starts again
    assert served.failures.failure() == ""
    fake_upstream.json_body, fake_upstream.status = OVERLOADED, 529
    assert [post(url).status_code for _ in range(3)] == [529, 529, 529]
    assert (
        served.failures.failure() == "model upstream anthropic failed: 529 overloaded_error after 3 attempts"
    )
    refused = post(url)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
    assert "529 overloaded_error after 3 attempts; not forwarded" in refused.json()["error"]["message"]
    assert len(fake_upstream.requests) == 6  # the refused one never reached the upstream
    assert len(sink.of("model.request")) == len(sink.of("model.response")) == 6
    assert [r.reason for r in sink.of("model.refused")] == [refused.json()["error"]["message"]]


def test_a_client_error_is_neither_a_failure_nor_a_success(
    proxy: tuple[ModelProxy, str], fake_upstream: FakeUpstream
) -> None:
    served, url = proxy
    fake_upstream.json_body, fake_upstream.status = OVERLOADED, 529
    post(url)
    fake_upstream.json_body = {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}
    fake_upstream.status = 400
    post(url)
    assert served.failures.consecutive == 1
    assert served.failures.failure().endswith("529 overloaded_error after 1 attempt")


def test_an_error_event_in_a_stream_is_a_failed_attempt(
    proxy: tuple[ModelProxy, str], fake_upstream: FakeUpstream
) -> None:
    served, url = proxy
    start = {"type": "message_start", "message": {"id": "msg_e", "model": PINNED, "usage": {}}}
    fake_upstream.chunks = sse_bytes([start, OVERLOADED])
    response = httpx.post(f"{url}/v1/messages", json=body(), headers=auth())
    assert response.status_code == 200 and b"overloaded_error" in response.content
    assert served.failures.failure() == (
        "model upstream anthropic failed: overloaded_error mid-stream after 1 attempt"
    )
