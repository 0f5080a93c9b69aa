"""Who is asking: a signed session cookie (browsers) or `Authorization: Bearer` (API clients).

The session cookie holds only the user name, signed with itsdangerous and checked for age; the CSRF
token is an HMAC of the session, so a form posted from another site (which cannot read the cookie's
page) cannot carry it. Bearer requests need no CSRF token: a browser never adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from corral.errors import AuthError
from corral.state.db import StateStore
from corral.state.tokens import hash_secret
from corral.state.users import Role, User, by_token, get_user

COOKIE = "corral_session"
SESSION_MAX_AGE = 12 * 3600


@dataclass(frozen=True)
class Sessions:
    secret: str

    def _signer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt="corral-session")

    def cookie_for(self, user: User) -> str:
        return self._signer().dumps({"u": user.name})

    def name_in(self, cookie: str) -> str | None:
        try:
            data = self._signer().loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return None
        name = data.get("u") if isinstance(data, dict) else None
        return name if isinstance(name, str) else None

    def csrf_for(self, cookie: str) -> str:
        return hmac.new(self.secret.encode(), b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, cookie: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_for(cookie), token)


@dataclass(frozen=True)
class Caller:
    user: User
    via: str
    """`session` or `token`: a session's state-changing request must carry the CSRF token."""
    cookie: str = ""
    token_hash: str = ""
    """For `token`: which token (a prefix of its stored hash), so its first use can be audited."""

    def need(self, role: Role) -> None:
        if not self.user.may(role):
            raise AuthError(
                f"{self.user.name} is a {self.user.role}; this needs the {role} role",
                hint=f"ask an admin: corral user add NAME --role {role}",
                status=403,
            )


def identify(store: StateStore, sessions: Sessions, authorization: str, cookie: str) -> Caller:
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthError("the Authorization header is not `Bearer TOKEN`")
        secret = secret.strip()
        return Caller(by_token(store, secret), "token", token_hash=hash_secret(secret)[:16])
    name = sessions.name_in(cookie) if cookie else None
    if name is None:
        raise AuthError("sign in first", hint="open /login, or send Authorization: Bearer TOKEN")
    try:
        return Caller(get_user(store, name), "session", cookie)
    except Exception as exc:  # a user removed since sign-in is simply signed out
        raise AuthError("the session's user no longer exists", hint="sign in again") from exc
