"""The run's model budget at the proxy: requests, tokens, cost and concurrency (issue 14, item 4).

Past a limit the proxy answers with an Anthropic-shaped error and audits a `model.refused`; the
upstream never sees the refused request."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from corral.config import parse_config
from corral.model.budget import Budget, BudgetLimits, estimated_cost_usd
from corral.model.proxy import ModelProxy, Upstream

from .conftest import PINNED, RUN_TOKEN, SMALL, FakeUpstream, RecordingSink, sse_bytes, wait_for
from .test_proxy import TOOL_STREAM, auth, body

Start = Callable[[BudgetLimits], tuple[ModelProxy, str]]


@pytest.fixture
def budgeted(sink: RecordingSink, fake_upstream: FakeUpstream) -> Iterator[Start]:
    proxies: list[ModelProxy] = []
    fake_upstream.chunks = sse_bytes(TOOL_STREAM)  # 7 input and 21 output tokens per answer

    def start(limits: BudgetLimits) -> tuple[ModelProxy, str]:
        upstream = Upstream.anthropic("sk-ant-canary-x", fake_upstream.url)
        proxy = ModelProxy(RUN_TOKEN, {PINNED, SMALL}, upstream, sink, budget=Budget(limits))
        proxies.append(proxy)
        return proxy, f"http://127.0.0.1:{proxy.serve_tcp()}"

    yield start
    for proxy in proxies:
        proxy.stop()


def _post(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", json=body(), headers=auth(), timeout=30)


@pytest.mark.parametrize(
    ("limits", "allowed", "words"),
    [
        (BudgetLimits(max_requests=2), 2, "2 model requests of max_model_requests = 2"),
        (BudgetLimits(max_tokens=30), 2, "56 tokens of max_tokens = 30"),
        (BudgetLimits(max_cost_usd=0.0005), 2, "of max_cost_usd = 0.0005"),
    ],
    ids=["requests", "tokens", "cost"],
)
def test_past_a_limit_requests_are_refused_and_audited(
    budgeted: Start,
    sink: RecordingSink,
    fake_upstream: FakeUpstream,
    limits: BudgetLimits,
    allowed: int,
    words: str,
) -> None:
    proxy, url = budgeted(limits)
    for _ in range(allowed):
        assert _post(url).status_code == 200
    for _ in range(2):  # it stays refused
        refused = _post(url)
        assert refused.status_code == 400
        error = refused.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert error["error"]["message"].startswith("corral: budget exhausted: ")
        assert words in error["error"]["message"]
    assert len(fake_upstream.requests) == allowed
    assert words in proxy.budget.exhausted
    reasons = [e.reason for e in sink.of("model.refused")]
    assert len(reasons) == 2 and all("budget exhausted" in r for r in reasons)
    assert proxy.budget.in_flight == 0


def test_concurrent_requests_past_the_limit_get_a_rate_limit_error(
    budgeted: Start, sink: RecordingSink, fake_upstream: FakeUpstream
) -> None:
    proxy, url = budgeted(BudgetLimits(max_concurrent=1))
    fake_upstream.gate_after = 2  # the first answer stalls mid-stream: it is in flight
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(_post(url)))
    thread.start()
    wait_for(lambda: proxy.budget.in_flight == 1)
    second = _post(url)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert "too many concurrent requests" in second.json()["error"]["message"]
    fake_upstream.gate.set()
    thread.join(30)
    assert first[0].status_code == 200
    fake_upstream.gate_after = None
    assert _post(url).status_code == 200  # a slot is free again; concurrency is no spent budget
    assert not proxy.budget.exhausted
    assert [e.reason for e in sink.of("model.refused")] == [second.json()["error"]["message"]]


def test_cost_is_estimated_at_list_prices_and_unknown_models_as_the_dearest() -> None:
    assert estimated_cost_usd("claude-sonnet-4-5-20250929", 1_000_000, 0) == pytest.approx(3.0)
    assert estimated_cost_usd("claude-haiku-4-5-20251001", 0, 1_000_000) == pytest.approx(5.0)
    assert estimated_cost_usd("claude-next-1-20990101", 1_000_000, 1_000_000) == pytest.approx(90.0)


def test_agent_section_sets_the_limits_with_defaults() -> None:
    defaults = BudgetLimits.from_config(parse_config("", "corral.toml").agent)
    assert defaults == BudgetLimits()
    assert (defaults.max_requests, defaults.max_tokens, defaults.max_cost_usd, defaults.max_concurrent) == (
        400,
        20_000_000,
        50.0,
        8,
    )
    text = "[agent]\nmax_model_requests = 5\nmax_tokens = 1000\nmax_cost_usd = 0.5\n"
    text += "max_concurrent_requests = 2\n"
    assert BudgetLimits.from_config(parse_config(text, "corral.toml").agent) == BudgetLimits(5, 1000, 0.5, 2)
