"""Capability tokens: minted per run, short-lived, audience-bound, optionally use-limited, revocable.

A token reads `crt_<id>_<secret>`. Only the SHA-256 of the secret is stored, so a store (in memory here,
the state DB's hashed token table later) never holds a usable token. The clear token goes to exactly
one place: the container's MCP config, through the socket bridge.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from corral.errors import TokenRefused

TOKEN_PREFIX = "crt_"

Principal = str
"""`agent` for run tokens, or `human:<name>` for operator tokens that may hold never-grantable tools."""


class TokenRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_id: str
    secret_hash: str
    run_id: str
    audience: str
    grants: tuple[str, ...]
    principal: Principal = "agent"
    issued_at: float
    expires_at: float
    max_uses: int | None = None
    uses: int = 0
    revoked: bool = False


class TokenStore(Protocol):
    """Where token records live. `consume` must be atomic: use limits hold under concurrency."""

    def put(self, record: TokenRecord) -> None: ...

    def get(self, token_id: str) -> TokenRecord | None: ...

    def revoke(self, token_id: str) -> None: ...

    def consume(self, token_id: str) -> TokenRecord:
        """Count one use and return the updated record; raise TokenRefused('exhausted') past the limit."""
        ...


class InMemoryTokenStore:
    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}
        self._lock = threading.Lock()

    def put(self, record: TokenRecord) -> None:
        with self._lock:
            self._records[record.token_id] = record

    def get(self, token_id: str) -> TokenRecord | None:
        with self._lock:
            record = self._records.get(token_id)
            return record.model_copy() if record else None

    def revoke(self, token_id: str) -> None:
        with self._lock:
            record = self._records.get(token_id)
            if record is not None:
                record.revoked = True

    def consume(self, token_id: str) -> TokenRecord:
        with self._lock:
            record = self._records.get(token_id)
            if record is None:
                raise TokenRefused(reason="unknown")
            if record.max_uses is not None and record.uses >= record.max_uses:
                raise TokenRefused(reason="exhausted", record=record.model_copy())
            record.uses += 1
            return record.model_copy()


def token_parts(token: str) -> tuple[str, str] | None:
    """The (id, secret) of a well-formed `crt_<id>_<secret>` token, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    return (token_id, secret) if sep and token_id and secret else None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenAuthority:
    """Mints and verifies tokens for one audience (one gateway)."""

    def __init__(self, store: TokenStore, audience: str) -> None:
        self.store = store
        self.audience = audience

    def mint(
        self,
        *,
        run_id: str,
        grants: list[str] | tuple[str, ...],
        ttl_seconds: float,
        max_uses: int | None = None,
        principal: Principal = "agent",
        audience: str | None = None,
    ) -> tuple[str, TokenRecord]:
        """Return the clear token (hand it to one client only) and its stored record."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        record = TokenRecord(
            token_id=token_id,
            secret_hash=_hash(secret),
            run_id=run_id,
            audience=audience or self.audience,
            grants=tuple(grants),
            principal=principal,
            issued_at=now,
            expires_at=now + ttl_seconds,
            max_uses=max_uses,
        )
        self.store.put(record)
        return f"{TOKEN_PREFIX}{token_id}_{secret}", record

    def verify(self, token: str, *, now: float | None = None) -> TokenRecord:
        """The record a clear token names, if it may be used here now; TokenRefused otherwise."""
        parts = token_parts(token)
        if parts is None:
            raise TokenRefused(reason="malformed")
        token_id, secret = parts
        record = self.store.get(token_id)
        if record is None or not hmac.compare_digest(record.secret_hash, _hash(secret)):
            raise TokenRefused(reason="unknown")
        if record.revoked:
            raise TokenRefused(reason="revoked", record=record)
        if (time.time() if now is None else now) >= record.expires_at:
            raise TokenRefused(reason="expired", record=record)
        if record.audience != self.audience:
            raise TokenRefused(reason="wrong_audience", record=record)
        # Use limits count tools/call only (`consume`), so listing and session set-up stay possible
        # and a spent token gets a structured refusal the agent can read.
        return record

    def revoke(self, token_id: str) -> None:
        self.store.revoke(token_id)
