"""Token-bucket rate limits per capability token and per (token, tool), from the gateway config."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field


class Bucket(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rate: float = Field(gt=0, description="tokens added per second")
    burst: int = Field(ge=1, description="bucket size: calls allowed back to back")


class RateLimitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    per_token: Bucket | None = None
    per_tool: dict[str, Bucket] = {}
    """Keyed by `<upstream>.<tool>`. Each token gets its own bucket per tool: one run can't starve another."""


class _State:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    def __init__(self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._states: dict[tuple[str, str], _State] = {}
        self._lock = threading.Lock()

    def _take(self, key: tuple[str, str], bucket: Bucket, now: float) -> float:
        """0 if a token was taken, else the seconds until one is available (nothing taken)."""
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(float(bucket.burst), now)
        state.tokens = min(float(bucket.burst), state.tokens + (now - state.stamp) * bucket.rate)
        state.stamp = now
        if state.tokens >= 1.0:
            state.tokens -= 1.0
            return 0.0
        return (1.0 - state.tokens) / bucket.rate

    def check(self, token_id: str, tool: str) -> tuple[str, float] | None:
        """None if the call may go, else (which limit, retry-after seconds). Takes from both or neither."""
        with self._lock:
            now = self._clock()
            tool_bucket = self.config.per_tool.get(tool)
            if tool_bucket is not None:
                wait = self._take((token_id, tool), tool_bucket, now)
                if wait:
                    return f"rate-limit:tool:{tool}", wait
            if self.config.per_token is not None:
                wait = self._take((token_id, ""), self.config.per_token, now)
                if wait:
                    if tool_bucket is not None:  # give back the tool token: the call does not go
                        self._states[(token_id, tool)].tokens += 1.0
                    return "rate-limit:token", wait
            return None
