"""Sessions of `corral server`, kept server-side: one row per sign-in, ended by signing out.

The session id is 256 random bits carried in the signed cookie; the row keeps only its sha256 (as
capability tokens do, `corral.state.tokens`), so the table cannot be replayed as cookies. A session is
live while its row exists, is not ended and has not expired: ending the row ends the session wherever
its cookie was copied to, which deleting the cookie in one browser could not.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from corral.errors import AuthError
from corral.state.base import utcnow
from corral.state.models import Record
from corral.state.schema import server_sessions
from corral.state.tokens import hash_secret

if TYPE_CHECKING:
    from corral.state.base import StoreBase
    from corral.state.users import User

EndReason = Literal["signed_out", "password_changed", "disabled"]
SIGN_IN_AGAIN = "sign in again at /login"
KEEP_ENDED = timedelta(days=30)
"""How long `corral gc` keeps the row of a session that ended or expired (sign-ins and sign-outs stay
on the server's audit chain for good): one row per sign-in would otherwise grow without bound."""


class ServerSession(Record):
    """A session as stored: the sha256 of its id, never the id."""

    id_hash: str
    team: str
    user_name: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    ended_reason: str


def _session(row: sa.Row[Any]) -> ServerSession:
    return ServerSession.model_validate(dict(row._mapping))


def open_session(store: StoreBase, user: User, lifetime: timedelta) -> tuple[ServerSession, str]:
    """A new session for `user`: its record and its id, which only the cookie holds."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with store.transaction(write=True) as conn:
        row = conn.execute(
            sa.insert(server_sessions)
            .values(
                id_hash=hash_secret(session_id),
                team=store.team,
                user_name=user.name,
                created_at=now,
                expires_at=now + lifetime,
                ended_reason="",
            )
            .returning(*server_sessions.c)
        ).one()
    return _session(row), session_id


def live_session(store: StoreBase, session_id: str, user_name: str) -> ServerSession:
    """The session's record if it is `user_name`'s and live; else `AuthError` saying why."""
    with store.transaction() as conn:
        row = conn.execute(
            sa.select(server_sessions).where(
                server_sessions.c.team == store.team, server_sessions.c.id_hash == hash_secret(session_id)
            )
        ).first()
    found = None if row is None else _session(row)
    if found is None or found.user_name != user_name:
        raise AuthError("this session is unknown to the server", hint=SIGN_IN_AGAIN)
    if found.ended_at is not None:
        why = found.ended_reason.replace("_", " ") or "ended"
        raise AuthError(f"this session has ended ({why})", hint=SIGN_IN_AGAIN)
    if found.expires_at <= utcnow():
        raise AuthError(f"this session expired at {found.expires_at:%Y-%m-%d %H:%M:%S}Z", hint=SIGN_IN_AGAIN)
    return found


def end_session(store: StoreBase, session_id: str, reason: EndReason) -> bool:
    """End one session (True if it was live; an ended one keeps its first end and reason)."""
    return _end(store, server_sessions.c.id_hash == hash_secret(session_id), reason) > 0


def end_user_sessions(store: StoreBase, user_name: str, reason: EndReason) -> int:
    """End every live session of `user_name` (for a new password or a disabled user); how many ended."""
    return _end(store, server_sessions.c.user_name == user_name, reason)


def _end(store: StoreBase, which: sa.ColumnElement[bool], reason: EndReason) -> int:
    with store.transaction(write=True) as conn:
        result = conn.execute(
            sa.update(server_sessions)
            .where(server_sessions.c.team == store.team, server_sessions.c.ended_at.is_(None), which)
            .values(ended_at=utcnow(), ended_reason=reason)
        )
    return int(result.rowcount)


def purge_sessions(store: StoreBase, before: datetime) -> int:
    """Delete the team's session rows that ended or expired before `before`; how many. A live session
    is never deleted, and a cookie of a deleted one is refused as unknown, as it was as ended."""
    with store.transaction(write=True) as conn:
        result = conn.execute(
            sa.delete(server_sessions).where(
                server_sessions.c.team == store.team,
                sa.or_(server_sessions.c.ended_at < before, server_sessions.c.expires_at < before),
            )
        )
    return int(result.rowcount)
