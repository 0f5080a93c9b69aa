"""Server-side sessions are stored by the hash of their id, live until ended or expired, end one at a time
or all of a user's at once, and are invisible to another team, on SQLite, Postgres and pgbouncer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from corral.errors import AuthError
from corral.state.base import utcnow
from corral.state.db import StateStore
from corral.state.schema import server_sessions
from corral.state.sessions import (
    KEEP_ENDED,
    end_session,
    end_user_sessions,
    live_session,
    open_session,
    purge_sessions,
)
from corral.state.users import add_user

HOUR = timedelta(hours=1)


def test_a_session_is_stored_by_its_hash_and_ends_alone(store: StateStore) -> None:
    ann = add_user(store, "ann", "approver")
    record, first = open_session(store, ann, HOUR)
    _other, second = open_session(store, ann, HOUR)
    assert first not in record.id_hash and record.expires_at - record.created_at == HOUR
    with store.transaction() as conn:
        stored = conn.execute(sa.select(server_sessions.c.id_hash)).scalars().all()
    assert len(stored) == 2 and first not in stored and second not in stored
    assert live_session(store, first, "ann") == record
    assert end_session(store, first, "signed_out") is True
    with pytest.raises(AuthError, match=r"ended \(signed out\)") as err:
        live_session(store, first, "ann")
    assert err.value.status == 401 and "sign in again" in (err.value.hint or "")
    assert end_session(store, first, "signed_out") is False  # already ended: nothing changes
    assert live_session(store, second, "ann").user_name == "ann"


def test_ending_a_users_sessions_ends_all_of_theirs_and_nobody_elses(store: StateStore) -> None:
    ann, bo = add_user(store, "ann", "approver"), add_user(store, "bo", "viewer")
    anns = [open_session(store, ann, HOUR)[1] for _ in range(3)]
    bos = open_session(store, bo, HOUR)[1]
    assert end_user_sessions(store, "ann", "password_changed") == 3
    for session_id in anns:
        with pytest.raises(AuthError, match="password changed"):
            live_session(store, session_id, "ann")
    assert live_session(store, bos, "bo").user_name == "bo"


def test_expired_unknown_and_someone_elses_sessions_are_refused(store: StateStore) -> None:
    ann, bo = add_user(store, "ann", "approver"), add_user(store, "bo", "viewer")
    record, session_id = open_session(store, ann, HOUR)
    with pytest.raises(AuthError, match="unknown"):
        live_session(store, session_id, "bo")  # ann's session does not sign bo in
    with pytest.raises(AuthError, match="unknown"):
        live_session(store, "made-up-session-id", "ann")
    bos = open_session(store, bo, HOUR)[1]
    with store.transaction(write=True) as conn:
        conn.execute(
            sa.update(server_sessions).where(server_sessions.c.id_hash == record.id_hash),
            {"expires_at": utcnow() - timedelta(seconds=1)},
        )
    with pytest.raises(AuthError, match="expired"):
        live_session(store, session_id, "ann")
    assert live_session(store, bos, "bo").user_name == "bo"


def test_another_team_can_neither_use_nor_end_a_teams_session(
    open_store: Callable[[str], StateStore],
) -> None:
    team_a, team_b = open_store("team-a"), open_store("team-b")
    ann_a = add_user(team_a, "ann", "approver")
    add_user(team_b, "ann", "approver")  # the same name in the other team
    _record, session_id = open_session(team_a, ann_a, HOUR)
    with pytest.raises(AuthError, match="unknown"):
        live_session(team_b, session_id, "ann")
    assert end_session(team_b, session_id, "signed_out") is False
    assert end_user_sessions(team_b, "ann", "disabled") == 0
    assert live_session(team_a, session_id, "ann").user_name == "ann"


def test_purging_deletes_only_sessions_long_ended_or_expired_and_only_the_teams(
    open_store: Callable[[str], StateStore],
) -> None:
    team_a, team_b = open_store("team-a"), open_store("team-b")
    ann, bo = add_user(team_a, "ann", "approver"), add_user(team_b, "bo", "viewer")
    ids = {
        name: open_session(team_a, ann, HOUR) for name in ("live", "ended_old", "expired_old", "ended_new")
    }
    other = open_session(team_b, bo, HOUR)
    old = utcnow() - KEEP_ENDED - HOUR
    with team_a.transaction(write=True) as conn:
        for name, values in (
            ("ended_old", {"ended_at": old, "ended_reason": "signed_out"}),
            ("expired_old", {"expires_at": old}),
            ("ended_new", {"ended_at": utcnow(), "ended_reason": "signed_out"}),
        ):
            conn.execute(
                sa.update(server_sessions).where(server_sessions.c.id_hash == ids[name][0].id_hash), values
            )
    with team_b.transaction(write=True) as conn:  # another team's old session: not team a's to purge
        conn.execute(
            sa.update(server_sessions).where(server_sessions.c.id_hash == other[0].id_hash),
            {"expires_at": old},
        )
    assert purge_sessions(team_a, utcnow() - KEEP_ENDED) == 2
    with team_a.transaction() as conn:  # SQLite has no row-level security: name the team
        mine = sa.select(server_sessions.c.id_hash).where(server_sessions.c.team == "team-a")
        kept = set(conn.execute(mine).scalars())
    assert kept == {ids["live"][0].id_hash, ids["ended_new"][0].id_hash}
    assert live_session(team_a, ids["live"][1], "ann").user_name == "ann"
    with pytest.raises(AuthError, match="unknown"):  # a purged session's cookie is refused
        live_session(team_a, ids["ended_old"][1], "ann")
    with team_b.transaction() as conn:
        theirs = sa.select(server_sessions.c.id_hash).where(server_sessions.c.team == "team-b")
        assert conn.execute(theirs).scalars().all() == [other[0].id_hash]
    assert purge_sessions(team_a, utcnow() - KEEP_ENDED) == 0
