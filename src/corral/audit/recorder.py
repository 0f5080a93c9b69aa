"""`RunRecorder`: the `EventSink` of one run, in one process.

`emit` redacts the payload, moves oversized content to side files, assigns the next `seq`, links
`prev_hash`, hashes, and appends the line to this process's spool for the run. With `durable=True` it
returns only after the line is fsynced (group commit). It is thread-safe: the model proxy, the hooks
and the orchestrator emit from different threads, and the chain lock makes their order the chain's.

One process records a run at a time: the recorder holds an exclusive `flock` on the run's head file
(`spool/runs/RUN.head`), and writes the chain head there when it closes, so a later recorder (say
`corral approve` in another process) continues the chain even while the store is down.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from corral.audit import RunTap
from corral.audit.blobs import MAX_EVENT_BYTES, BlobStore
from corral.audit.chain import Checkpoint, canonical, chain_hash, dumps_line
from corral.audit.redact import Redactor
from corral.audit.spool import SpoolWriter
from corral.errors import StoreError
from corral.events import Event, event_payload

E = TypeVar("E", bound=Event)

_SIZE_MARGIN = 4096
"""Room for the chain fields added after the cheap size check."""


class RunLock:
    """The exclusive right to extend one run's chain, plus its last known head."""

    def __init__(self, path: Path, timeout: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    raise StoreError(
                        f"the audit chain of run {path.stem} is held by another corral process",
                        hint="wait for that process to finish (one process records a run at a time)",
                    ) from None
                time.sleep(0.05)

    def read_head(self) -> tuple[int, str] | None:
        raw = os.pread(self._fd, 4096, 0)
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return (int(value["seq"]), str(value["hash"])) if isinstance(value, dict) else None

    def write_head(self, seq: int, hash_: str) -> None:
        data = json.dumps({"seq": seq, "hash": hash_}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class RunRecorder:
    """Implements `corral.audit.EventSink` for one run. Create it with `AuditLog.for_run`."""

    def __init__(
        self,
        run_id: str,
        head: tuple[int, str],
        writer: SpoolWriter,
        lock: RunLock,
        blobs: BlobStore,
        redactor: Redactor,
        checkpoint_every: int,
        on_close: Callable[[RunRecorder], None] = lambda _recorder: None,
        tap: RunTap | None = None,
    ) -> None:
        """`on_close` is told once the recorder has closed (the log then ships and forgets it); `tap`
        sees every stored event (OpenTelemetry export)."""
        self.run_id = run_id
        self._on_close = on_close
        self._seq, self._hash = head
        self._writer = writer
        self._lock = lock
        self._blobs = blobs
        self.redactor = redactor
        self._every = checkpoint_every
        self._since_checkpoint = 0
        self._chain = threading.Lock()
        self._closed = False
        self._tap = tap

    @property
    def spool_path(self) -> Path:
        return self._writer.path

    @property
    def head(self) -> tuple[int, str]:
        return self._seq, self._hash

    @property
    def closed(self) -> bool:
        return self._closed

    def register_secret(self, name: str, value: str) -> None:
        self.redactor.register(name, value)

    def emit(self, event: E, *, durable: bool = False) -> E:
        payload = self._prepare(event)
        with self._chain:
            if self._closed:
                raise StoreError(
                    f"the audit recorder of run {self.run_id} is closed; event {event.kind} lost",
                    hint="emit only between AuditLog.for_run() and RunRecorder.close()",
                )
            seq = self._seq + 1
            payload["run_id"] = self.run_id
            payload["seq"] = seq
            payload["prev_hash"] = self._hash
            digest = chain_hash(self._hash, canonical(payload))
            payload["hash"] = digest
            end = self._writer.write(dumps_line(payload))
            self._seq, self._hash = seq, digest
            if self._tap is not None:
                self._tap.event(payload)
            self._since_checkpoint += 1
            if self._since_checkpoint >= self._every:
                self._write_checkpoint("interval")
        if durable:
            self._writer.sync(end)
        return type(event).model_validate(payload)

    def _prepare(self, event: Event) -> dict[str, Any]:
        """Everything that does not depend on the chain position, done outside the chain lock."""
        payload: dict[str, Any] = self.redactor.redact(event_payload(event))
        payload.pop("hash", None)
        size = len(dumps_line(payload).encode())
        if size > MAX_EVENT_BYTES - _SIZE_MARGIN:
            payload = self._blobs.externalize(payload, size, MAX_EVENT_BYTES - _SIZE_MARGIN)
        return payload

    def _write_checkpoint(self, reason: Literal["interval", "close"]) -> None:
        if self._seq == 0:
            return
        cp = Checkpoint(run_id=self.run_id, seq=self._seq, hash=self._hash, reason=reason)
        self._writer.write(cp.line())
        self._since_checkpoint = 0

    def sync(self) -> None:
        """Fsync everything emitted so far."""
        self._writer.sync(self._writer.written)

    def close(self) -> None:
        """Write the closing checkpoint, fsync, record the head, and hand the spool to the shipper."""
        with self._chain:
            if self._closed:
                return
            self._closed = True
            self._write_checkpoint("close")
            self._writer.close()
            if self._seq:
                self._lock.write_head(self._seq, self._hash)
            self._lock.release()
        if self._tap is not None:
            self._tap.closed()
        self._on_close(self)
