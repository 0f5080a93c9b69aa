"""Users of `corral server`, per team: argon2 password hashes and sha256 API-token hashes, never clear.

An API token is 256 random bits, so a plain sha256 finds it by an indexed equality with nothing to
brute-force (as capability tokens do, `corral.state.tokens`); a password is a human secret and gets
argon2, checked only against the one user named at sign-in.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from corral.errors import AuthError, NotFound, StoreError
from corral.state.base import utcnow
from corral.state.schema import users
from corral.state.tokens import hash_secret

if TYPE_CHECKING:
    from corral.state.base import StoreBase

Role = Literal["viewer", "approver", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "approver", "admin")
TOKEN_PREFIX = "crlu_"


class User(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    team: str
    name: str
    role: Role
    created_at: datetime

    def may(self, needed: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def _user(row: sa.Row[Any]) -> User:
    data = dict(row._mapping)
    return User(
        id=data["id"], team=data["team"], name=data["name"], role=data["role"], created_at=data["created_at"]
    )


def add_user(store: StoreBase, name: str, role: Role, password: str = "") -> User:
    """A new user; without a password they can sign in only with an API token."""
    if role not in ROLES:
        raise StoreError(
            f"role {role!r} is not one of {', '.join(ROLES)}", hint="use --role viewer|approver|admin"
        )
    if not name.strip() or len(name) > 200:
        raise StoreError(f"user name {name!r} must be 1 to 200 characters")
    hashed = _hasher().hash(password) if password else ""
    with store.transaction(write=True) as conn:
        exists = conn.execute(
            sa.select(users.c.id).where(users.c.team == store.team, users.c.name == name)
        ).first()
        if exists is not None:
            raise StoreError(f"user {name!r} already exists in team {store.team!r}", hint="pick another name")
        row = conn.execute(
            sa.insert(users)
            .values(team=store.team, name=name, role=role, password_hash=hashed, created_at=utcnow())
            .returning(*users.c)
        ).one()
    return _user(row)


def get_user(store: StoreBase, name: str) -> User:
    with store.transaction() as conn:
        row = conn.execute(
            sa.select(users).where(
                users.c.team == store.team, users.c.name == name, users.c.disabled_at.is_(None)
            )
        ).first()
    if row is None:
        raise NotFound(f"no user {name!r} in team {store.team!r}", hint="add one with `corral user add NAME`")
    return _user(row)


def list_users(store: StoreBase) -> list[User]:
    with store.transaction() as conn:
        rows = conn.execute(sa.select(users).where(users.c.team == store.team).order_by(users.c.name)).all()
    return [_user(r) for r in rows]


def new_token(store: StoreBase, name: str) -> str:
    """A fresh API token for `name`, shown once; it replaces the user's previous one."""
    user = get_user(store, name)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.transaction(write=True) as conn:
        conn.execute(sa.update(users).where(users.c.id == user.id).values(token_hash=hash_secret(secret)))
    return secret


def by_token(store: StoreBase, secret: str) -> User:
    if not secret.startswith(TOKEN_PREFIX):
        raise AuthError(
            "the bearer token is not a corral user token", hint="make one with `corral user token NAME`"
        )
    with store.transaction() as conn:
        row = conn.execute(
            sa.select(users).where(
                users.c.team == store.team,
                users.c.token_hash == hash_secret(secret),
                users.c.disabled_at.is_(None),
            )
        ).first()
    if row is None:
        raise AuthError(
            "the bearer token is unknown or was replaced", hint="make one with `corral user token NAME`"
        )
    return _user(row)


def set_password(store: StoreBase, name: str, password: str) -> int:
    """Give `name` a new password (empty: token only) and end every session they had signed in
    with the old one; how many sessions ended."""
    from corral.state.sessions import end_user_sessions

    user = get_user(store, name)
    hashed = _hasher().hash(password) if password else ""
    with store.transaction(write=True) as conn:
        conn.execute(sa.update(users).where(users.c.id == user.id).values(password_hash=hashed))
    return end_user_sessions(store, user.name, "password_changed")


def check_password(store: StoreBase, name: str, password: str) -> User:
    from argon2.exceptions import Argon2Error

    refused = AuthError(
        "wrong user name or password", hint="ask an admin to set a new one: `corral user password NAME`"
    )
    with store.transaction() as conn:
        row = conn.execute(
            sa.select(users).where(
                users.c.team == store.team, users.c.name == name, users.c.disabled_at.is_(None)
            )
        ).first()
    if row is None or not row.password_hash:
        _hasher().hash(password)  # the same work either way: no user-name oracle by timing
        raise refused
    try:
        _hasher().verify(row.password_hash, password)
    except Argon2Error as exc:
        raise refused from exc
    return _user(row)
