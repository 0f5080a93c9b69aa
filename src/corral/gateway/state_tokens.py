"""A token store that enforces from memory and records every token in the state DB.

The gateway checks a token on every call, so enforcement stays in memory, off the database. Each
token is also written through to the state layer's token table: hashed (never in clear), with its
scope, TTL, use limit and revocation, so a team can see which tokens exist and which are live.
"""

from __future__ import annotations

import contextlib

from corral.errors import CorralError
from corral.gateway.tokens import InMemoryTokenStore, TokenRecord
from corral.state.db import StateStore


class StateRecordedTokenStore(InMemoryTokenStore):
    def __init__(self, state: StateStore, project: str) -> None:
        super().__init__()
        self._state = state
        self._project = project

    def put(self, record: TokenRecord) -> None:
        super().put(record)
        self._state.store_token(
            record.token_id,
            record.secret_hash,
            [f"audience:{record.audience}", f"principal:{record.principal}", *record.grants],
            record.expires_at - record.issued_at,
            record.max_uses,
            project=self._project,
            run_id=record.run_id,
        )

    def revoke(self, token_id: str) -> None:
        super().revoke(token_id)
        # The in-memory revocation is what the gateway enforces; the record follows it.
        with contextlib.suppress(CorralError):
            self._state.revoke_token(token_id, "revoked by the gateway")
