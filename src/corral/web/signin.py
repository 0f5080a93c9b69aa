"""Sign-in's audit and throttle: who signed in or out, who was refused, and a lockout on guessing.

Sign-ins belong to no run, so they go on the server's own chain (`server-<started>-<hex>`, one per
server start, as `corral gateway serve` keeps one), hash-chained and redacted like a run's. An API
token is audited at its first use in this process, not per request: the chain records who used the
API, without one event per page view.

The throttle counts failures per typed name and per client address, whether or not the name exists,
so its answer (429 after `LIMIT` failures in `WINDOW` seconds) reveals nothing about which users
exist. While locked, even the right password is refused without being checked: otherwise the lockout
would still answer a guesser's question. It lives in memory: a restart forgets it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from corral import events as ev
from corral.errors import AuthError

if TYPE_CHECKING:
    from corral.audit.log import AuditLog
    from corral.audit.recorder import RunRecorder
    from corral.state.users import User

LIMIT = 5
"""Failures per name in `WINDOW` before the name is locked; a client address gets `LIMIT * 4`."""
WINDOW = 900.0


def chain_id() -> str:
    return f"server-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


class Throttle:
    def __init__(self, limit: int = LIMIT, window: float = WINDOW) -> None:
        self._limits = {"name": limit, "client": limit * 4}
        self.window = window
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        seen = self._failures.setdefault(key, deque())
        while seen and now - seen[0] > self.window:
            seen.popleft()
        return seen

    def locked_for(self, name: str | None, client: str) -> float:
        """Seconds until this name (None: any, as for a token) and client may try again (0: now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in self._keys(name, client):
                seen = self._recent(key, now)
                if len(seen) >= self._limits[key[0]]:
                    wait = max(wait, self.window - (now - seen[0]))
        return wait

    def failed(self, name: str | None, client: str) -> bool:
        """Count a failure; True when it is the one that locks the name or the client."""
        now = time.monotonic()
        locks = False
        with self._lock:
            for key in self._keys(name, client):
                seen = self._recent(key, now)
                seen.append(now)
                locks = locks or len(seen) == self._limits[key[0]]
        return locks

    @staticmethod
    def _keys(name: str | None, client: str) -> list[tuple[str, str]]:
        return [("client", client)] if name is None else [("name", name), ("client", client)]

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(("name", name), None)


class SignInAudit:
    """The server chain's recorder, opened at the first event and closed with the app."""

    def __init__(self, audit: Callable[[], AuditLog]) -> None:
        self._audit = audit
        self.chain = chain_id()
        self._lock = threading.Lock()
        self._recorder: RunRecorder | None = None
        self._tokens_seen: set[tuple[int, str]] = set()

    def emit(self, event: ev.Event) -> None:
        with self._lock:
            if self._recorder is None:
                self._recorder = self._audit().for_run(self.chain)
            self._recorder.emit(event)

    def token_used(self, user: User, token_hash: str, client: str) -> None:
        key = (user.id, token_hash)
        with self._lock:
            if key in self._tokens_seen:
                return
            self._tokens_seen.add(key)
        self.emit(ev.AuthTokenUsed(actor=f"human:{user.name}", role=user.role, client=client))

    def close(self) -> None:
        with self._lock:
            if self._recorder is not None:
                self._recorder.close()
                self._recorder = None


def throttled(wait: float) -> AuthError:
    return AuthError(
        "too many failed sign-ins; sign-in is paused for this name or address",
        hint=f"try again in {int(wait) + 1} s, or ask an admin",
        status=429,
    )
