"""Capability tokens are stored hashed, and revoked, expired, used-up or unknown ones are refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from corral.errors import NotFound, StoreError, TokenRefused
from corral.state import tokens
from corral.state.base import utcnow
from corral.state.db import StateStore
from corral.state.tokens import hash_secret


def _all_cells(store: StateStore) -> str:
    with store.transaction() as conn:
        rows = conn.execute(sa.text("SELECT * FROM tokens")).all()
    return "\n".join(repr(tuple(r)) for r in rows)


def test_tokens_are_stored_hashed_never_in_clear(store: StateStore) -> None:
    record, secret = store.issue_token(
        ["forge.comment", "deploy.stage"], ttl=timedelta(minutes=30), run_id="r1"
    )
    assert secret.startswith("crl_") and len(secret) > 40
    assert record.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    cells = _all_cells(store)
    assert record.token_id in cells
    assert secret not in cells
    assert secret.removeprefix("crl_") not in cells
    checked = store.check_token(secret)
    assert (checked.token_id, checked.scope, checked.uses) == (
        record.token_id,
        ["forge.comment", "deploy.stage"],
        1,
    )


def test_store_token_refuses_anything_but_a_hash(store: StateStore) -> None:
    with pytest.raises(StoreError, match="sha256"):
        store.store_token("tok_x", "crl_this-is-a-clear-secret", ["forge.comment"], ttl=60)
    stored = store.store_token("tok_y", hash_secret("s3cret"), ["forge.comment"], ttl=60, max_uses=1)
    assert stored.max_uses == 1 and store.check_token("s3cret").token_id == "tok_y"


def test_a_revoked_token_is_refused(store: StateStore) -> None:
    record, secret = store.issue_token(["forge.comment"], ttl=600)
    revoked = store.revoke_token(record.token_id, "run finished")
    assert revoked.revoked_at is not None
    with pytest.raises(TokenRefused) as err:
        store.check_token(secret)
    assert err.value.reason == "revoked"
    assert record.token_id in str(err.value) and "run finished" in str(err.value)
    again = store.revoke_token(record.token_id, "second time")
    assert (again.revoked_at, again.revoked_reason) == (revoked.revoked_at, "run finished")
    with pytest.raises(NotFound):
        store.revoke_token("tok_nope")


def test_an_expired_token_is_refused(store: StateStore) -> None:
    record, secret = store.issue_token(["forge.comment"], ttl=600)
    with store.transaction(write=True) as conn:
        conn.execute(
            sa.update(tokens.tokens).where(tokens.tokens.c.token_id == record.token_id),
            {"expires_at": utcnow() - timedelta(seconds=1)},
        )
    with pytest.raises(TokenRefused, match="expired") as err:
        store.check_token(secret)
    assert err.value.reason == "expired"


def test_a_used_up_token_is_refused(store: StateStore) -> None:
    _record, secret = store.issue_token(["forge.comment"], ttl=600, max_uses=2)
    assert store.check_token(secret, consume=False).uses == 0
    assert [store.check_token(secret).uses for _ in range(2)] == [1, 2]
    with pytest.raises(TokenRefused, match="2 of 2") as err:
        store.check_token(secret)
    assert err.value.reason == "exhausted"


def test_unknown_and_other_teams_tokens_are_refused(
    store: StateStore, open_store: Callable[[str], StateStore]
) -> None:
    _record, secret = store.issue_token(["forge.comment"], ttl=600)
    with pytest.raises(TokenRefused) as err:
        store.check_token("crl_never-issued")
    assert err.value.reason == "unknown"
    with pytest.raises(TokenRefused) as err:
        open_store("team-b").check_token(secret)
    assert err.value.reason == "unknown"
    assert store.check_token(secret).uses == 1


def test_bad_lifetimes_and_limits_are_refused(store: StateStore) -> None:
    with pytest.raises(StoreError, match="ttl"):
        store.issue_token(["x"], ttl=0)
    with pytest.raises(StoreError, match="max_uses"):
        store.issue_token(["x"], ttl=60, max_uses=0)
    live, _ = store.issue_token(["x"], ttl=60, run_id="r9")
    dead, _ = store.issue_token(["x"], ttl=60, run_id="r9")
    store.revoke_token(dead.token_id)
    assert [t.token_id for t in tokens.list_tokens(store, run_id="r9", live_only=True)] == [live.token_id]
