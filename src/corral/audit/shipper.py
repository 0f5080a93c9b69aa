"""`Shipper`: moves spooled events to the audit store, in order, acknowledged before the marker moves.

It ships two kinds of spool:
- this process's own (one per open recorder, `track`ed), shipped on every pass and removed once its
  recorder has closed and everything in it is stored;
- spools that no live process owns (a crash, an outage), recovered and shipped by `ship_pending`.

A store failure never raises out of `ship_now`: the shipper goes offline, backs off, and retries until
the store answers, while recorders keep spooling durably.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from corral.audit.blobs import BlobStore
from corral.audit.chain import Checkpoint
from corral.audit.spool import (
    count_events,
    last_record,
    list_spools,
    quarantine,
    read_chunk,
    read_marker,
    recover,
    remove_spool,
    run_of,
    try_lock,
    write_marker,
)
from corral.audit.store import AuditStore, safe_url
from corral.errors import CorralError, SpoolCorrupt, StoreError

log = logging.getLogger("corral.audit")

_MAX_BACKOFF = 5.0


class Shipper:
    def __init__(
        self,
        store: AuditStore | None,
        url: str,
        spool_dir: Path,
        interval: float = 0.2,
        blobs: BlobStore | None = None,
    ) -> None:
        self.blobs = blobs
        """Side files: shipped to the store before the events that reference them."""
        self.store = store
        self.url = url
        self.spool_dir = spool_dir
        self.interval = interval
        self.store_error: CorralError | None = None
        self.shipped = 0
        self._own: dict[Path, bool] = {}  # spool path -> its recorder is closed
        self._offsets: dict[Path, int] = {}
        self._ship_lock = threading.RLock()
        self._state = threading.Lock()
        self._orphans_pending = True
        self._backoff = 0.0
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- this process's spools -------------------------------------------------------------

    def track(self, path: Path, written: int) -> None:
        """A recorder of this process opened `path` (already `written` bytes long)."""
        with self._state:
            self._own[path] = False
            self._offsets[path] = written

    def recorder_closed(self, path: Path) -> None:
        with self._state:
            self._own[path] = True
        self.ship_now()

    def owns(self, path: Path) -> bool:
        return path in self._own

    # ---- the background thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-audit-shipper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and make one last pass."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.ship_now()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._stop.is_set():
                self.ship_now()

    # ---- shipping --------------------------------------------------------------------------

    def ship_now(self) -> int:
        """One shipping pass over this process's spools (and orphans still pending); never raises."""
        if self.store is None or time.monotonic() < self._retry_at:
            return 0
        shipped = 0
        with self._ship_lock:
            try:
                if self._orphans_pending:
                    shipped += self.ship_pending()
                with self._state:
                    own = list(self._own.items())
                for path, closed in own:
                    shipped += self._ship_own(path, closed)
            except StoreError as exc:
                self.went_offline(exc)
                return shipped
            if self.store_error is not None:
                log.warning("audit store %s is reachable again; shipping the spool", safe_url(self.url))
            self.store_error = None
            self._backoff = 0.0
        return shipped

    def went_offline(self, exc: StoreError) -> None:
        if self.store_error is None:
            log.warning("audit store %s failed, spooling locally: %s", safe_url(self.url), exc)
        self.store_error = exc
        self._orphans_pending = True
        self._backoff = min(max(self._backoff * 2, 0.25), _MAX_BACKOFF)
        self._retry_at = time.monotonic() + self._backoff

    def _ship_own(self, path: Path, closed: bool) -> int:
        try:
            offset, n, _ = self._ship_file(path, self._offsets.get(path, 0))
        except FileNotFoundError:  # another process shipped and removed a closed spool of ours
            offset, n = 0, 0
            closed = True
        self._offsets[path] = offset
        if closed:
            remove_spool(path)
            with self._state:
                self._own.pop(path, None)
                self._offsets.pop(path, None)
        return n

    def _ship_file(self, path: Path, offset: int) -> tuple[int, int, bool]:
        """Ship whole records from `offset`.

        Returns the new offset, the events shipped, and whether the spool ends with a `close`
        checkpoint. The marker moves only after the store has acknowledged the batch.
        """
        assert self.store is not None
        shipped = 0
        ends_closed = False
        while True:
            chunk = read_chunk(path, offset)
            if chunk.end == offset:
                return offset, shipped, ends_closed
            rows = chunk.events
            if self.blobs is not None:
                refs = [
                    ref
                    for r in rows
                    if "[blob:sha256:" in r.data
                    for ref in self.blobs.refs(json.loads(r.data))
                ]
                if refs:
                    self.store.insert_blobs(self.blobs.contents(refs))
            self.shipped += self.store.insert_many(rows)
            self.store.insert_checkpoints(chunk.checkpoints)
            write_marker(path, chunk.end)
            offset = chunk.end
            shipped += len(rows)
            ends_closed = chunk.ends_closed

    def ship_pending(self, run_id: str | None = None) -> int:
        """Ship spools that no live process owns (left by a crash or an outage), then remove them.

        A torn tail is truncated first, with a warning. A spool whose writer died without closing
        gets a `recovered` checkpoint at its last event. Raises StoreError if the store fails.
        """
        if self.store is None:
            raise StoreError(f"no audit store to ship to ({self.url})")
        shipped = 0
        with self._ship_lock:
            for path in list_spools(self.spool_dir, run_id):
                if path in self._own:
                    continue
                fd = try_lock(path)
                if fd is None:
                    continue  # a live process is writing it and will ship it itself
                try:
                    shipped += self._ship_orphan(path)
                finally:
                    os.close(fd)
            if run_id is None:
                self._orphans_pending = False
        return shipped

    def _ship_orphan(self, path: Path) -> int:
        assert self.store is not None
        recover(path)
        offset = min(read_marker(path), path.stat().st_size)
        if self._continued_elsewhere(path, offset):
            # A fleet run whose host died here was started again on another host, which continued
            # its chain from what the store held. Shipping this tail would fork the chain: it is kept
            # on this host instead, under the same name as a corrupt spool.
            moved = quarantine(path)
            log.error(
                "%s: the store's chain of run %s went on from another host after this one stopped; "
                "the events it never shipped are kept as %s",
                path,
                run_of(path),
                moved,
            )
            return 0
        try:
            _, shipped, closed_cleanly = self._ship_file(path, offset)
        except SpoolCorrupt as exc:
            moved = quarantine(path)
            log.error("%s; the events before it were shipped; the file is kept as %s", exc, moved)
            return 0
        tail = last_record(path)
        if tail and not closed_cleanly:
            self.store.insert_checkpoints(
                [
                    Checkpoint(
                        run_id=run_of(path), seq=int(tail["seq"]), hash=str(tail["hash"]), reason="recovered"
                    )
                ]
            )
        remove_spool(path)
        return shipped

    def _continued_elsewhere(self, path: Path, offset: int) -> bool:
        """Whether the store holds other events at seqs this spool has not shipped yet."""
        assert self.store is not None
        rows = read_chunk(path, offset, limit=1 << 16).events
        if not rows:
            return False
        stored = self.store.read(run_of(path), after_seq=rows[0].seq - 1, limit=len(rows))
        held = {row.seq: row.hash for row in stored}
        return any(row.seq in held and held[row.seq] != row.hash for row in rows)

    def backlog(self) -> int:
        """Events spooled on this host that the store does not have yet (for `corral doctor`)."""
        total = 0
        for path in list_spools(self.spool_dir):
            try:
                total += count_events(path, read_marker(path))
            except FileNotFoundError:
                continue
        return total
