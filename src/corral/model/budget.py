"""A run's model budget, enforced at the proxy: requests, tokens, dollars and concurrency.

Every generation request through the run's proxy counts, whether Claude Code sent it or code inside
the sandbox that found the model port: the proxy cannot tell them apart and does not need to. Once a
limit is reached, each further request is refused with an Anthropic-shaped error (which Claude Code
shows and does not retry) and the run fails with "budget exhausted: ...".

Cost is estimated from the usage the upstream reports, at list prices per million tokens; a model
the table does not know is priced as the most expensive one, so the estimate errs high.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.config import AgentConfig

DEFAULT_MAX_MODEL_REQUESTS = 400
DEFAULT_MAX_TOKENS = 20_000_000
DEFAULT_MAX_COST_USD = 50.0
DEFAULT_MAX_CONCURRENT_REQUESTS = 8

# USD per million (input, output) tokens, by model family.
_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus": (15.0, 75.0),
    "claude-sonnet": (3.0, 15.0),
    "claude-haiku": (1.0, 5.0),
}
_UNKNOWN_PRICE = max(_PRICES.values())


def estimated_cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    family = next((p for name, p in _PRICES.items() if model.startswith(name)), _UNKNOWN_PRICE)
    return (input_tokens * family[0] + output_tokens * family[1]) / 1_000_000


@dataclass(frozen=True)
class BudgetLimits:
    max_requests: int = DEFAULT_MAX_MODEL_REQUESTS
    max_tokens: int = DEFAULT_MAX_TOKENS
    """Input plus output tokens over the run."""
    max_cost_usd: float = DEFAULT_MAX_COST_USD
    max_concurrent: int = DEFAULT_MAX_CONCURRENT_REQUESTS

    @classmethod
    def from_config(cls, agent: AgentConfig) -> BudgetLimits:
        return cls(
            max_requests=agent.max_model_requests,
            max_tokens=agent.max_tokens,
            max_cost_usd=agent.max_cost_usd,
            max_concurrent=agent.max_concurrent_requests,
        )


class Budget:
    """Thread-safe: the proxy's event loop charges it, the run's thread reads `exhausted`."""

    def __init__(self, limits: BudgetLimits | None = None) -> None:
        self.limits = limits or BudgetLimits()
        self._lock = threading.Lock()
        self.requests = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self.in_flight = 0
        self.exhausted = ""
        """The first limit reached, in words; empty while the budget lasts. It stays set."""

    def _spent(self) -> str:
        lim = self.limits
        if self.requests >= lim.max_requests:
            return f"{self.requests} model requests of max_model_requests = {lim.max_requests}"
        if self.tokens >= lim.max_tokens:
            return f"{self.tokens} tokens of max_tokens = {lim.max_tokens}"
        if self.cost_usd >= lim.max_cost_usd:
            return f"${self.cost_usd:.2f} of max_cost_usd = {lim.max_cost_usd:g}"
        return ""

    def admit(self) -> tuple[str, str]:
        """("", "") when a request may go upstream (then `finish` it once); else (kind, reason): kind
        `budget` once a limit is spent, `concurrency` while too many are in flight."""
        with self._lock:
            if not self.exhausted:
                self.exhausted = self._spent()
            if self.exhausted:
                return "budget", self.exhausted
            if self.in_flight >= self.limits.max_concurrent:
                return "concurrency", (
                    f"{self.in_flight} model requests in flight, max_concurrent_requests = "
                    f"{self.limits.max_concurrent}"
                )
            self.requests += 1
            self.in_flight += 1
            return "", ""

    def finish(self, model: str, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            self.in_flight -= 1
            self.tokens += input_tokens + output_tokens
            self.cost_usd += estimated_cost_usd(model, input_tokens, output_tokens)
