"""Who is asking: a signed session cookie (browsers) or `Authorization: Bearer` (API clients).

The session cookie holds the user name and a random session id, signed with itsdangerous and checked
for age; the session itself lives server-side (`corral.state.sessions`), so signing out ends it even
where the cookie was copied. A cookie of the older, name-only format is refused: sign in again. The
CSRF token is an HMAC of the cookie, so a form posted from another site (which cannot read the
cookie's page) cannot carry it. Bearer requests need no CSRF token: a browser never adds that header
by itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from corral.errors import AuthError
from corral.state.db import StateStore
from corral.state.sessions import SIGN_IN_AGAIN, live_session
from corral.state.tokens import hash_secret
from corral.state.users import Role, User, by_token, get_user

COOKIE = "corral_session"
SESSION_MAX_AGE = 12 * 3600


@dataclass(frozen=True)
class SessionCookie:
    """What a session cookie carries once its signature and age are checked."""

    user_name: str
    session_id: str


@dataclass(frozen=True)
class Sessions:
    secret: str

    def _signer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt="corral-session")

    def cookie_for(self, user: User, session_id: str) -> str:
        return self._signer().dumps({"u": user.name, "s": session_id})

    def read(self, cookie: str) -> SessionCookie:
        """The cookie's user and session id; `AuthError` for a forged, expired or old-format cookie."""
        try:
            data = self._signer().loads(cookie, max_age=SESSION_MAX_AGE)
        except SignatureExpired as exc:
            raise AuthError("the session cookie has expired", hint=SIGN_IN_AGAIN) from exc
        except BadSignature as exc:
            raise AuthError("the session cookie was not signed by this server", hint=SIGN_IN_AGAIN) from exc
        name = data.get("u") if isinstance(data, dict) else None
        session_id = data.get("s") if isinstance(data, dict) else None
        if isinstance(name, str) and session_id is None:
            raise AuthError(
                "the session cookie is of the older format, which names no server-side session",
                hint=SIGN_IN_AGAIN,
            )
        if not isinstance(name, str) or not isinstance(session_id, str):
            raise AuthError("the session cookie is malformed", hint=SIGN_IN_AGAIN)
        return SessionCookie(name, session_id)

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
    session_id: str = ""
    """For `session`: the server-side session the cookie names (what signing out ends)."""
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
    if not cookie:
        raise AuthError("sign in first", hint="open /login, or send Authorization: Bearer TOKEN")
    signed = sessions.read(cookie)
    live_session(store, signed.session_id, signed.user_name)
    try:
        user = get_user(store, signed.user_name)
    except Exception as exc:  # a user removed since sign-in is simply signed out
        raise AuthError("the session's user no longer exists", hint=SIGN_IN_AGAIN) from exc
    return Caller(user, "session", cookie, session_id=signed.session_id)
