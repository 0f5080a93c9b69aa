"""The MongoDB audit store (tested against FerretDB 1.24 with its SQLite backend).

Three collections: `events`, with a unique index on (run_id, seq), `checkpoints`, and `blobs` (the
side files of oversized events, in chunks, each blob's hash checked when it is read back). Each event
document keeps its index fields at the top level and its payload as the stored JSON text (`e`): the
text is what the hash covers, it survives any BSON round trip unchanged, and payload keys such as
`gen_ai.tool.name` or a tool input's `$ref` never meet MongoDB's rules on field names.

Shipping uses `insert_many(ordered=False)` and tolerates duplicate-key errors (code 11000), so
re-shipping a spool after a crash is idempotent. The write concern comes from the URL (`w=`,
`journal=`) and defaults to `w="majority", j=True`.

Features FerretDB 1.24 lacks, which this module does not use: `createRole` (the insert-only role is
documented for real MongoDB in docs/audit.md), `$max`/`$min` group accumulators, change streams and
validators. `runs()` is built from `distinct` and sorted `find`s instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri
from pymongo.write_concern import WriteConcern

from corral.audit.chain import Checkpoint, EventRow
from corral.audit.store import RunSummary, safe_url
from corral.errors import StoreError

DEFAULT_DB = "corral_audit"
_DUPLICATE_KEY = 11000
_BLOB_CHUNK = 8 * 1024 * 1024
_UNAUTHORIZED = 13

log = logging.getLogger("corral.audit")


class MongoStore:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = parse_uri(url)
        except (PyMongoError, ValueError) as exc:
            raise StoreError(
                f"audit store URL {safe_url(url)!r} is not a valid MongoDB URL: {exc}",
                hint="use mongodb://USER:PASSWORD@HOST:PORT/DATABASE",
            ) from exc
        options: dict[str, Any] = {k.lower(): v for k, v in parsed["options"].items()}
        kwargs: dict[str, Any] = {}
        if "serverselectiontimeoutms" not in options:
            # Fail fast: the spool keeps events safe, and the shipper retries with backoff.
            kwargs["serverSelectionTimeoutMS"] = 3000
        if "connecttimeoutms" not in options:
            kwargs["connectTimeoutMS"] = 3000
        self._client: MongoClient[dict[str, Any]] = MongoClient(url, **kwargs)
        if "w" in options or "journal" in options:
            concern = self._client.write_concern
        else:
            concern = WriteConcern(w="majority", j=True)
        db = self._client.get_database(parsed["database"] or DEFAULT_DB, write_concern=concern)
        self.write_concern = concern
        self._events = db.get_collection("events")
        self._checkpoints = db.get_collection("checkpoints")
        self._blobs = db.get_collection("blobs")
        self._indexed = False

    def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        try:
            self._events.create_index([("run_id", ASCENDING), ("seq", ASCENDING)], unique=True)
            self._checkpoints.create_index(
                [("run_id", ASCENDING), ("seq", ASCENDING), ("reason", ASCENDING)], unique=True
            )
        except OperationFailure as exc:
            if exc.code != _UNAUTHORIZED:
                raise
            # The insert-only role may not create indexes; an admin creates them once (docs/audit.md).
            log.warning(
                "audit store %s: cannot create indexes (%s); assuming an admin did", safe_url(self.url), exc
            )
        self._indexed = True

    def _fail(self, what: str, exc: Exception) -> StoreError:
        return StoreError(
            f"audit store {safe_url(self.url)} {what}: {exc}",
            hint="check that MongoDB is running and reachable, and the URL's credentials; "
            "events stay in the local spool until it is back",
        )

    def ping(self) -> None:
        try:
            self._client.admin.command("ping")
            self._ensure_indexes()
        except PyMongoError as exc:
            raise self._fail("did not answer", exc) from exc

    def insert_many(self, rows: Sequence[EventRow]) -> int:
        if not rows:
            return 0
        docs = [
            {"run_id": r.run_id, "seq": r.seq, "kind": r.kind, "ts": r.ts, "hash": r.hash, "e": r.data}
            for r in rows
        ]
        try:
            self._ensure_indexes()
            return len(self._events.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
                raise self._fail("refused a write", exc) from exc
            return int(exc.details.get("nInserted", 0))
        except PyMongoError as exc:
            raise self._fail("refused a write", exc) from exc

    def insert_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        if not checkpoints:
            return
        docs = [
            {"run_id": c.run_id, "seq": c.seq, "reason": c.reason, "hash": c.hash, "ts": c.ts.isoformat()}
            for c in checkpoints
        ]
        try:
            self._ensure_indexes()
            self._checkpoints.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise self._fail("refused a checkpoint", exc) from exc
        except PyMongoError as exc:
            raise self._fail("refused a checkpoint", exc) from exc

    def insert_blobs(self, blobs: Mapping[str, bytes]) -> None:
        """One document per chunk of at most `_BLOB_CHUNK` bytes (a document holds at most 16 MiB),
        `_id` = digest:index, so a re-shipped blob is a duplicate key, not a second copy."""
        docs: list[dict[str, Any]] = []
        for digest, content in blobs.items():
            parts = [content[i : i + _BLOB_CHUNK] for i in range(0, len(content), _BLOB_CHUNK)] or [b""]
            docs.extend(
                {"_id": f"{digest}:{i}", "digest": digest, "i": i, "n": len(parts), "content": part}
                for i, part in enumerate(parts)
            )
        if not docs:
            return
        try:
            self._blobs.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
                raise self._fail("refused a blob", exc) from exc
        except PyMongoError as exc:
            raise self._fail("refused a blob", exc) from exc

    def read_blob(self, digest: str) -> bytes | None:
        """The blob's chunks joined, or None when any is missing or they do not hash to `digest`."""
        try:
            parts = list(self._blobs.find({"digest": digest}).sort("i", ASCENDING))
        except PyMongoError as exc:
            raise self._fail("did not answer", exc) from exc
        if (
            not parts
            or len(parts) != int(parts[0]["n"])
            or [int(p["i"]) for p in parts] != list(range(len(parts)))
        ):
            return None
        content = b"".join(bytes(p["content"]) for p in parts)
        return content if hashlib.sha256(content).hexdigest() == digest else None

    def read(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[EventRow]:
        try:
            cursor = self._events.find({"run_id": run_id, "seq": {"$gt": after_seq}}).sort("seq", ASCENDING)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [
                EventRow(d["run_id"], int(d["seq"]), d["kind"], d["ts"], d["hash"], d["e"]) for d in cursor
            ]
        except PyMongoError as exc:
            raise self._fail("could not be read", exc) from exc

    def head(self, run_id: str) -> tuple[int, str] | None:
        try:
            doc = self._events.find_one({"run_id": run_id}, sort=[("seq", DESCENDING)])
        except PyMongoError as exc:
            raise self._fail("could not be read", exc) from exc
        return (int(doc["seq"]), str(doc["hash"])) if doc else None

    def runs(self) -> list[RunSummary]:
        out: list[RunSummary] = []
        try:
            for run_id in self._events.distinct("run_id"):
                first = self._events.find_one({"run_id": run_id}, sort=[("seq", ASCENDING)])
                last = self._events.find_one({"run_id": run_id}, sort=[("seq", DESCENDING)])
                count = self._events.count_documents({"run_id": run_id})
                if first and last:
                    out.append(RunSummary(run_id, count, int(last["seq"]), first["ts"], last["ts"]))
        except PyMongoError as exc:
            raise self._fail("could not be read", exc) from exc
        return sorted(out, key=lambda r: r.first_ts)

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        try:
            docs = self._checkpoints.find({"run_id": run_id}).sort(
                [("seq", ASCENDING), ("reason", ASCENDING)]
            )
            return [
                Checkpoint(run_id=d["run_id"], seq=d["seq"], reason=d["reason"], hash=d["hash"], ts=d["ts"])
                for d in docs
            ]
        except PyMongoError as exc:
            raise self._fail("could not be read", exc) from exc

    def close(self) -> None:
        self._client.close()
