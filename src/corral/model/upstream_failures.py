"""A failing model upstream: what the proxy counts, so that a run ends clearly and in bounded time.

Anthropic documents 429 `rate_limit_error` (with `retry-after`), 500 `api_error` and 529
`overloaded_error` as worth retrying. The pinned Claude Code retries them itself, with backoff and
honouring `retry-after`: measured on 2.1.332 against a loopback upstream (docs/security.md,
"Faults"), each request is tried 1 + `CLAUDE_CODE_MAX_RETRIES` times, and without that variable it
keeps retrying for minutes. corral does not retry on top of it, which would multiply the attempts
and hide them from the audit; it bounds them instead:

- the sandbox's Claude Code gets `CLAUDE_CODE_MAX_RETRIES = [agent] model_retries`;
- a `retry-after` longer than MAX_RETRY_AFTER_SECONDS is shortened to it on the way back;
- every attempt is a request of its own through the proxy, recorded as `model.request` and
  `model.response` (stop_reason "error", the status and the error type);
- after 1 + `model_retries` consecutive failed attempts the proxy stops forwarding: what comes next
  (code in the sandbox, or a client that ignores the variable) is refused with a 400, which no
  client retries, and the run fails with "model upstream failed: 529 overloaded_error after N attempts".

A stream that stalls (no byte for `[agent] model_stream_idle_seconds`) is cut by the proxy with an
`error` event and counts as a failed attempt: Claude Code's own idle watchdog waits at least five
minutes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

DEFAULT_MODEL_RETRIES = 3
DEFAULT_STREAM_IDLE_SECONDS = 120.0
MAX_RETRY_AFTER_SECONDS = 60
"""An upstream's `retry-after` above this is shortened: the run's wall clock, not the upstream, decides
how long a run may wait."""

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class Failure:
    """One failed attempt: the HTTP status (0 when none arrived) and the Anthropic error type."""

    status: int
    error_type: str

    def describe(self) -> str:
        return f"{self.status} {self.error_type}" if self.status else self.error_type


class UpstreamFailures:
    """Consecutive failed attempts at the model upstream. Thread-safe: the proxy serves concurrently."""

    def __init__(self, upstream: str, retries: int = DEFAULT_MODEL_RETRIES) -> None:
        self.upstream = upstream
        self.attempts_allowed = 1 + retries
        self.consecutive = 0
        self.last: Failure | None = None
        self.gave_up = ""
        """Set once the bound is reached: the reason the run fails with."""
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        with self._lock:
            if not self.gave_up:
                self.consecutive = 0

    def failed(self, failure: Failure) -> None:
        with self._lock:
            self.consecutive += 1
            self.last = failure
            if not self.gave_up and self.consecutive >= self.attempts_allowed:
                self.gave_up = (
                    f"model upstream {self.upstream} failed: {failure.describe()} "
                    f"after {self.consecutive} attempts"
                )

    def failure(self) -> str:
        """What failed when the latest attempts did ("" when the last one succeeded): the reason a run
        that ended in error fails with, whether or not the bound was reached."""
        with self._lock:
            if self.gave_up or self.last is None or not self.consecutive:
                return self.gave_up
            return (
                f"model upstream {self.upstream} failed: {self.last.describe()} "
                f"after {self.consecutive} attempt{'s' if self.consecutive > 1 else ''}"
            )

    def refusal(self) -> str:
        """Why a request is no longer forwarded, or "" while attempts are left."""
        with self._lock:
            return self.gave_up


def clamp_retry_header(name: str, value: str) -> str:
    """`retry-after` (seconds) or `retry-after-ms` as forwarded: at most MAX_RETRY_AFTER_SECONDS.
    An HTTP date, or anything else that is not a number, becomes the maximum."""
    scale = 1000 if name == "retry-after-ms" else 1
    try:
        wait = float(value)
    except ValueError:
        wait = -1.0
    return value if 0 <= wait <= MAX_RETRY_AFTER_SECONDS * scale else str(MAX_RETRY_AFTER_SECONDS * scale)
