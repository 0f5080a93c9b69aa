"""Capability tokens: stored as the sha256 of their secret, never in clear.

A secret is 256 random bits, so a plain sha256 is enough (nothing to brute-force, no salt needed),
and it lets `check_token` find the token by an indexed equality on the hash. Checking also counts a
use, in the same UPDATE that checks revocation, expiry and the use limit, so two concurrent uses of
a one-use token cannot both pass.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from corral.errors import NotFound, StoreError, TokenRefused
from corral.state.base import utcnow
from corral.state.models import TokenRecord
from corral.state.schema import tokens

if TYPE_CHECKING:
    from corral.state.base import StoreBase

SECRET_PREFIX = "crl_"
_HASH = re.compile(r"^[0-9a-f]{64}$")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> tuple[str, str]:
    """(token_id, secret): the id is public (logs, audit), the secret is shown once."""
    return "tok_" + secrets.token_hex(8), SECRET_PREFIX + secrets.token_urlsafe(32)


def _now() -> datetime:
    return utcnow()


def _record(row: sa.Row[Any]) -> TokenRecord:
    return TokenRecord.model_validate(dict(row._mapping))


def store_token(
    store: StoreBase,
    token_id: str,
    secret_hash: str,
    scope: list[str],
    ttl: timedelta | float,
    max_uses: int | None = None,
    *,
    project: str = "",
    run_id: str = "",
) -> TokenRecord:
    if not _HASH.match(secret_hash):
        raise StoreError(
            f"token {token_id}: secret_hash must be a hex sha256 (64 chars), not a clear secret",
            hint="pass tokens.hash_secret(secret)",
        )
    lifetime = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
    if lifetime <= timedelta(0):
        raise StoreError(f"token {token_id}: ttl must be positive, got {lifetime}")
    if max_uses is not None and max_uses < 1:
        raise StoreError(f"token {token_id}: max_uses must be at least 1, got {max_uses}")
    now = _now()
    with store.transaction(write=True) as conn:
        row = conn.execute(
            sa.insert(tokens)
            .values(
                token_id=token_id,
                team=store.team,
                project=project,
                run_id=run_id,
                secret_hash=secret_hash,
                scope=list(scope),
                created_at=now,
                expires_at=now + lifetime,
                max_uses=max_uses,
                uses=0,
            )
            .returning(*tokens.c)
        ).one()
    return _record(row)


def issue_token(
    store: StoreBase,
    scope: list[str],
    ttl: timedelta | float,
    max_uses: int | None = None,
    *,
    project: str = "",
    run_id: str = "",
) -> tuple[TokenRecord, str]:
    token_id, secret = new_secret()
    record = store_token(
        store, token_id, hash_secret(secret), scope, ttl, max_uses, project=project, run_id=run_id
    )
    return record, secret


def check_token(store: StoreBase, secret: str, *, consume: bool = True) -> TokenRecord:
    """The token's record if it is live (counting one use when `consume`); else `TokenRefused`."""
    digest = hash_secret(secret)
    now = _now()
    live = sa.and_(
        tokens.c.team == store.team,
        tokens.c.secret_hash == digest,
        tokens.c.revoked_at.is_(None),
        tokens.c.expires_at > now,
        sa.or_(tokens.c.max_uses.is_(None), tokens.c.uses < tokens.c.max_uses),
    )
    with store.transaction(write=consume) as conn:
        if consume:
            row = conn.execute(
                sa.update(tokens).where(live).values(uses=tokens.c.uses + 1).returning(*tokens.c)
            ).first()
        else:
            row = conn.execute(sa.select(tokens).where(live)).first()
        if row is not None:
            return _record(row)
        found = conn.execute(
            sa.select(tokens).where(tokens.c.team == store.team, tokens.c.secret_hash == digest)
        ).first()
    raise _refusal(None if found is None else _record(found), now)


def _refusal(token: TokenRecord | None, now: datetime) -> TokenRefused:
    if token is None:
        return TokenRefused(
            "unknown capability token", reason="unknown", hint="ask corral for a new run token"
        )
    if token.revoked_at is not None:
        why = f": {token.revoked_reason}" if token.revoked_reason else ""
        return TokenRefused(
            f"token {token.token_id} was revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S}Z{why}",
            reason="revoked",
        )
    if token.expires_at <= now:
        return TokenRefused(
            f"token {token.token_id} expired at {token.expires_at:%Y-%m-%d %H:%M:%S}Z",
            reason="expired",
            hint="tokens live for one run; start a new run",
        )
    return TokenRefused(
        f"token {token.token_id} is used up ({token.uses} of {token.max_uses} uses)", reason="exhausted"
    )


def revoke_token(store: StoreBase, token_id: str, reason: str = "") -> TokenRecord:
    """Revoke a token (idempotent: a second revoke keeps the first time and reason)."""
    with store.transaction(write=True) as conn:
        conn.execute(
            sa.update(tokens)
            .where(tokens.c.team == store.team, tokens.c.token_id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=_now(), revoked_reason=reason)
        )
        row = conn.execute(
            sa.select(tokens).where(tokens.c.team == store.team, tokens.c.token_id == token_id)
        ).first()
    if row is None:
        raise NotFound(f"no token {token_id!r} in team {store.team!r}")
    return _record(row)


def list_tokens(store: StoreBase, *, run_id: str | None = None, live_only: bool = False) -> list[TokenRecord]:
    query = sa.select(tokens).where(tokens.c.team == store.team)
    if run_id is not None:
        query = query.where(tokens.c.run_id == run_id)
    if live_only:
        query = query.where(tokens.c.revoked_at.is_(None), tokens.c.expires_at > _now())
    with store.transaction() as conn:
        return [_record(r) for r in conn.execute(query.order_by(tokens.c.created_at)).all()]
