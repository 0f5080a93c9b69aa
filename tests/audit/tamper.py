"""What an attacker with direct access to a store could do: edit, delete, swap, insert, append.

Each backend gets the same five operations on the raw rows, bypassing corral entirely (the SQLite
and Postgres append-only triggers are dropped or disabled first, as a file holder or superuser could).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pymongo

from corral.audit.chain import dumps_line, event_hash


def forge(payload: dict[str, Any], *, prev_hash: str, seq: int, **changes: Any) -> dict[str, Any]:
    """A well-formed event: correct own hash, linked to `prev_hash`. Only the chain can catch it."""
    forged = {**payload, **changes, "seq": seq, "prev_hash": prev_hash}
    forged["hash"] = event_hash(forged)
    return forged


class Tamper(Protocol):
    def payload(self, run_id: str, seq: int) -> dict[str, Any]: ...
    def edit(self, run_id: str, seq: int, payload: dict[str, Any]) -> None: ...
    def delete(self, run_id: str, seq: int) -> None: ...
    def swap(self, run_id: str, a: int, b: int) -> None: ...
    def insert_at(self, run_id: str, seq: int, payload: dict[str, Any]) -> None: ...
    def append(self, payload: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SqliteTamper:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        for name in ("events_no_update", "events_no_delete"):
            self.db.execute(f"DROP TRIGGER IF EXISTS {name}")

    def payload(self, run_id: str, seq: int) -> dict[str, Any]:
        row = self.db.execute("SELECT data FROM events WHERE run_id=? AND seq=?", (run_id, seq)).fetchone()
        return dict(json.loads(row[0]))

    def edit(self, run_id: str, seq: int, payload: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE events SET data=?, hash=? WHERE run_id=? AND seq=?",
            (dumps_line(payload), payload["hash"], run_id, seq),
        )

    def delete(self, run_id: str, seq: int) -> None:
        self.db.execute("DELETE FROM events WHERE run_id=? AND seq=?", (run_id, seq))

    def swap(self, run_id: str, a: int, b: int) -> None:
        self.db.execute("UPDATE events SET seq=-1 WHERE run_id=? AND seq=?", (run_id, a))
        self.db.execute("UPDATE events SET seq=? WHERE run_id=? AND seq=?", (a, run_id, b))
        self.db.execute("UPDATE events SET seq=? WHERE run_id=? AND seq=-1", (b, run_id))

    def insert_at(self, run_id: str, seq: int, payload: dict[str, Any]) -> None:
        self.db.execute("UPDATE events SET seq=-(seq+1) WHERE run_id=? AND seq>=?", (run_id, seq))
        self.db.execute("UPDATE events SET seq=-seq WHERE run_id=? AND seq<0", (run_id,))
        self.append(payload)

    def append(self, payload: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO events (run_id, seq, kind, ts, hash, data) VALUES (?,?,?,?,?,?)",
            (
                payload["run_id"],
                payload["seq"],
                payload["kind"],
                payload["ts"],
                payload["hash"],
                dumps_line(payload),
            ),
        )

    def close(self) -> None:
        self.db.close()


class MongoTamper:
    def __init__(self, url: str) -> None:
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
        self.events = self.client.get_default_database()["events"]

    def payload(self, run_id: str, seq: int) -> dict[str, Any]:
        doc = self.events.find_one({"run_id": run_id, "seq": seq})
        assert doc is not None
        return dict(json.loads(doc["e"]))

    def edit(self, run_id: str, seq: int, payload: dict[str, Any]) -> None:
        self.events.update_one(
            {"run_id": run_id, "seq": seq}, {"$set": {"e": dumps_line(payload), "hash": payload["hash"]}}
        )

    def delete(self, run_id: str, seq: int) -> None:
        self.events.delete_one({"run_id": run_id, "seq": seq})

    def swap(self, run_id: str, a: int, b: int) -> None:
        self.events.update_one({"run_id": run_id, "seq": a}, {"$set": {"seq": -1}})
        self.events.update_one({"run_id": run_id, "seq": b}, {"$set": {"seq": a}})
        self.events.update_one({"run_id": run_id, "seq": -1}, {"$set": {"seq": b}})

    def insert_at(self, run_id: str, seq: int, payload: dict[str, Any]) -> None:
        docs = list(self.events.find({"run_id": run_id, "seq": {"$gte": seq}}).sort("seq", -1))
        for doc in docs:  # highest first, so the unique index never sees two equal seqs
            self.events.update_one({"_id": doc["_id"]}, {"$set": {"seq": doc["seq"] + 1}})
        self.append(payload)

    def append(self, payload: dict[str, Any]) -> None:
        self.events.insert_one(
            {
                "run_id": payload["run_id"],
                "seq": payload["seq"],
                "kind": payload["kind"],
                "ts": payload["ts"],
                "hash": payload["hash"],
                "e": dumps_line(payload),
            }
        )

    def close(self) -> None:
        self.client.close()


class PostgresTamper:
    """As the superuser: disable the append-only triggers, then rewrite rows."""

    def __init__(self, url: str) -> None:
        self.db = psycopg.connect("postgresql://" + url.split("://", 1)[1], autocommit=True)
        self.db.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")

    def payload(self, run_id: str, seq: int) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT data FROM audit_events WHERE run_id=%s AND seq=%s", (run_id, seq)
        ).fetchone()
        assert row is not None
        return dict(json.loads(row[0]))

    def edit(self, run_id: str, seq: int, payload: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE audit_events SET data=%s, hash=%s WHERE run_id=%s AND seq=%s",
            (dumps_line(payload), payload["hash"], run_id, seq),
        )

    def delete(self, run_id: str, seq: int) -> None:
        self.db.execute("DELETE FROM audit_events WHERE run_id=%s AND seq=%s", (run_id, seq))

    def swap(self, run_id: str, a: int, b: int) -> None:
        for old, new in ((a, -1), (b, a), (-1, b)):
            self.db.execute("UPDATE audit_events SET seq=%s WHERE run_id=%s AND seq=%s", (new, run_id, old))

    def insert_at(self, run_id: str, seq: int, payload: dict[str, Any]) -> None:
        self.db.execute("UPDATE audit_events SET seq=-(seq+1) WHERE run_id=%s AND seq>=%s", (run_id, seq))
        self.db.execute("UPDATE audit_events SET seq=-seq WHERE run_id=%s AND seq<0", (run_id,))
        self.append(payload)

    def append(self, payload: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO audit_events (run_id, seq, kind, ts, hash, data) VALUES (%s,%s,%s,%s,%s,%s)",
            (
                payload["run_id"],
                payload["seq"],
                payload["kind"],
                payload["ts"],
                payload["hash"],
                dumps_line(payload),
            ),
        )

    def close(self) -> None:
        self.db.close()


def tamper_for(url: str) -> Tamper:
    if url.startswith("sqlite:///"):
        return SqliteTamper(Path(url.removeprefix("sqlite:///")))
    if url.startswith("postgresql"):
        return PostgresTamper(url)
    return MongoTamper(url)
