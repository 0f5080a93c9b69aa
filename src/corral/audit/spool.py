"""The durable spool: one append-only JSONL file per run per recording process.

Every event is one line, written with a single `write(2)` to an `O_APPEND` descriptor, so a process
killed with SIGKILL leaves whole lines in the kernel's page cache. `durable` appends also wait for
`fdatasync`; concurrent durable appends share one sync (group commit): a thread that finds the file
already synced past its own line returns at once.

Beside each spool, `NAME.offset` holds how many bytes the shipper has stored, rewritten atomically
(temp file, fsync, rename). The writer holds an exclusive `flock` on its spool for its lifetime, so
any other process can tell a live spool from an orphan left by a crash: it can lock only the orphan.

A full disk must not cost the run its record: each spool keeps RESERVE_BYTES allocated past its end
(`fallocate` with KEEP_SIZE), so the events that say how the run ended still fit once the disk is
full, and a write that finds no space raises a StoreError naming the directory, never half a line.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.audit.chain import CHECKPOINT_KIND, Checkpoint, EventRow
from corral.errors import SpoolCorrupt, StoreError

log = logging.getLogger("corral.audit")

SUFFIX = ".jsonl"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_READ_CHUNK = 8 * 1024 * 1024
RESERVE_BYTES = 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 1
_libc = ctypes.CDLL(None, use_errno=True)


def reserve(fd: int, offset: int, length: int) -> bool:
    """Allocate `length` bytes from `offset` without changing the file's size; False where the
    filesystem cannot (the spool then works as before, only without the reserve)."""
    fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
    if fallocate is None:
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return bool(fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0)


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise StoreError(
            f"run id {run_id!r} cannot name an audit chain",
            hint="run ids are 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    return run_id


def spool_name(run_id: str) -> str:
    return f"{check_run_id(run_id)}~{time.time_ns():x}-{os.getpid()}{SUFFIX}"


def run_of(path: Path) -> str:
    return path.name.split("~", 1)[0]


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".offset")


def read_marker(path: Path) -> int:
    try:
        return int(marker_path(path).read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError as exc:
        raise StoreError(
            f"shipping marker {marker_path(path)} is corrupt",
            hint="delete it to re-ship the whole spool (the store ignores duplicates)",
        ) from exc


def write_marker(path: Path, offset: int) -> None:
    target = marker_path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, str(offset).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def remove_spool(path: Path) -> None:
    for p in (marker_path(path), path):
        p.unlink(missing_ok=True)


def try_lock(path: Path) -> int | None:
    """Open and lock `path` for exclusive use; None when a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class SpoolWriter:
    """Appends lines to one spool file. `write` is called under the recorder's chain lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The directory entry itself must survive power loss, or the fsynced lines have no name.
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._written = os.fstat(self._fd).st_size
        self._synced = self._written
        self._reserved = (
            self._written + RESERVE_BYTES if reserve(self._fd, self._written, RESERVE_BYTES) else 0
        )
        self._sync_lock = threading.Lock()
        self.syncs = 0

    @property
    def written(self) -> int:
        return self._written

    def write(self, line: str) -> int:
        """Append one line; return the file offset just past it (what `sync` needs)."""
        data = line.encode() + b"\n"
        try:
            n = os.write(self._fd, data)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise self._full() from exc
        if n != len(data):  # a full disk: never leave half a line to be taken for a torn tail
            os.ftruncate(self._fd, self._written)
            raise self._full()
        self._written += n
        # Topped up while there is still room: the reserve is for when there is none.
        low = self._reserved and self._reserved - self._written < RESERVE_BYTES // 2
        if low and reserve(self._fd, self._written, RESERVE_BYTES):
            self._reserved = self._written + RESERVE_BYTES
        return self._written

    def _full(self) -> StoreError:
        return StoreError(
            f"no space left on the disk holding the audit spool {self.path.parent}: "
            "an event was not recorded",
            hint="free space on that disk, or set CORRAL_HOME to a larger one; the events already "
            "recorded are kept and ship when corral next runs",
        )

    def sync(self, upto: int) -> None:
        """Return once every byte before `upto` is on disk (group commit)."""
        if self._synced >= upto:
            return
        with self._sync_lock:
            if self._synced >= upto:
                return
            target = self._written
            os.fdatasync(self._fd)
            self.syncs += 1
            self._synced = max(self._synced, target)

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._reserved:
            # Give the reserve back: a spool that waits for the store should hold only its lines.
            os.ftruncate(self._fd, self._written)
        os.fsync(self._fd)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1


@dataclass
class Chunk:
    """Whole records read from a spool, and the offset just past the last of them."""

    events: list[EventRow] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    end: int = 0
    ends_closed: bool = False
    """The last record read is a `close` checkpoint: its writer finished cleanly."""


# The recorder writes every event line as `{"kind":..,"run_id":..,"seq":..,"ts":..,...,"hash":".."}`
# (the Event base fields lead, `hash` is appended last), so the index fields can be read without
# parsing the whole line: the shipper's hot path. Anything else takes the full JSON parse.
_INDEX = re.compile(
    r'\{"kind":"([a-z._]+)","run_id":"([A-Za-z0-9_.-]+)","seq":(\d+),"ts":"([0-9T:.+Z-]+)",'
    r'.*,"hash":"([0-9a-f]{64})"\}\Z',
    re.DOTALL,
)


def parse_line(line: str) -> EventRow | Checkpoint:
    """One spool line as an event row or a checkpoint; ValueError if it is not a record."""
    m = _INDEX.match(line)
    if m:
        return EventRow(m.group(2), int(m.group(3)), m.group(1), m.group(4), m.group(5), line)
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if value.get("kind") == CHECKPOINT_KIND:
        return Checkpoint.model_validate(value)
    return EventRow.from_payload(value, line)


def read_chunk(path: Path, offset: int, *, limit: int = _READ_CHUNK) -> Chunk:
    """Read whole lines from `offset`. A trailing partial line is left for later (or `recover`)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(limit)
    cut = data.rfind(b"\n") + 1
    chunk = Chunk(end=offset + cut)
    pos = offset
    for raw in data[:cut].splitlines():
        try:
            record = parse_line(raw.decode())
        except (ValueError, KeyError, TypeError) as exc:
            if chunk.events or chunk.checkpoints:
                chunk.end = pos  # ship what precedes the bad line first; the next read raises
                return chunk
            raise SpoolCorrupt(
                f"audit spool {path} is corrupt at byte {pos}: {exc}",
                hint="this is not a torn tail (whole lines follow it); keep the file for inspection",
            ) from exc
        pos += len(raw) + 1
        if isinstance(record, Checkpoint):
            chunk.checkpoints.append(record)
            chunk.ends_closed = record.reason == "close"
        else:
            chunk.events.append(record)
            chunk.ends_closed = False
    return chunk


def recover(path: Path) -> int:
    """Truncate a torn tail (a partial or unparseable last line) of an orphan spool.

    Returns how many bytes were cut. Only the tail can be torn: appends are sequential, so a power
    loss can lose or garble only the newest write. A garbled line followed by whole lines is real
    corruption, which `read_chunk` reports instead of silently dropping events.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        data = f.read()
    keep = len(data)
    while keep > 0:
        if data[keep - 1 : keep] != b"\n":
            keep = data.rfind(b"\n", 0, keep) + 1
            continue
        start = data.rfind(b"\n", 0, keep - 1) + 1
        try:
            json.loads(data[start : keep - 1])
            break
        except ValueError:
            keep = start
    cut = size - keep
    if cut:
        log.warning(
            "audit spool %s had a torn tail: truncated %d bytes to the last whole event (offset %d)",
            path,
            cut,
            keep,
        )
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
    return cut


def last_record(path: Path) -> dict[str, Any] | None:
    """The last whole event line of a spool (for resuming a chain while the store is down)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _READ_CHUNK))
        data = f.read()
    for raw in reversed(data.splitlines()):
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("kind") != CHECKPOINT_KIND:
            return value
    return None


_CHECKPOINT_PREFIX = b'{"kind":"audit.checkpoint"'


def count_events(path: Path, offset: int) -> int:
    """Whole event lines after `offset` (checkpoint lines are not events)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return sum(1 for line in f if line.endswith(b"\n") and not line.startswith(_CHECKPOINT_PREFIX))


def quarantine(path: Path) -> Path:
    """Move a corrupt spool aside (kept for inspection, no longer shipped)."""
    target = path.with_name(path.name + ".corrupt")
    path.rename(target)
    marker_path(path).unlink(missing_ok=True)
    return target


def list_spools(spool_dir: Path, run_id: str | None = None) -> list[Path]:
    if not spool_dir.is_dir():
        return []
    pattern = f"{run_id}~*{SUFFIX}" if run_id else f"*~*{SUFFIX}"
    return sorted(spool_dir.glob(pattern))
