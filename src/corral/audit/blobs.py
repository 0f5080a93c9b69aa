"""Side files for oversized event content, stored by SHA-256 under `settings.home/blobs`.

An event whose payload is over `MAX_EVENT_BYTES` (a huge tool output, a long diff) keeps its shape:
its largest strings are replaced, one by one until it fits, by a reference `[blob:sha256:HEX:SIZE]`
that carries the content hash and its size in bytes. The hash chain covers the reference, and the
reference covers the content, so `corral audit verify` can check the side file too.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from corral.errors import NotFound

MAX_EVENT_BYTES = 1024 * 1024
_MIN_EXTERNAL = 4096
"""Strings shorter than this stay inline: moving them out would not help the event fit."""

BLOB_REF = re.compile(r"^\[blob:sha256:([0-9a-f]{64}):(\d+)\]$")


def blob_ref(digest: str, size: int) -> str:
    return f"[blob:sha256:{digest}:{size}]"


class BlobStore:
    """Side files under `root`; `remote` reads one back from the audit store (`AuditStore.read_blob`)
    on a machine that has the store but not the host's files."""

    def __init__(self, root: Path, remote: Callable[[str], bytes | None] | None = None) -> None:
        self.root = root
        self.remote = remote

    def _content(self, digest: str) -> bytes | None:
        target = self.path(digest)
        if target.exists():
            return target.read_bytes()
        if self.remote is not None:
            return self.remote(digest)
        return None

    def contents(self, refs: Iterable[str]) -> dict[str, bytes]:
        """The local side files of `refs` that exist and match their hash: what the shipper sends."""
        out: dict[str, bytes] = {}
        for ref in refs:
            m = BLOB_REF.match(ref)
            target = self.path(m.group(1)) if m else None
            if m and target is not None and target.exists():
                data = target.read_bytes()
                if hashlib.sha256(data).hexdigest() == m.group(1):
                    out[m.group(1)] = data
        return out

    def resolve(self, text: str) -> str:
        """`text`'s content when it is a blob reference that can be read back, else `text`."""
        m = BLOB_REF.match(text)
        if not m:
            return text
        data = self._content(m.group(1))
        if data is None or hashlib.sha256(data).hexdigest() != m.group(1):
            return text
        return data.decode(errors="replace")

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def put(self, content: str) -> str:
        """Write `content` durably (once per distinct content) and return its reference."""
        data = content.encode()
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # Per thread as well as per process: two runs of one server may write the same content at once.
            tmp = target.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        return blob_ref(digest, len(data))

    def get(self, ref: str) -> str:
        m = BLOB_REF.match(ref)
        if not m:
            raise NotFound(f"{ref!r} is not a blob reference")
        data = self._content(m.group(1))
        if data is None:
            raise NotFound(
                f"blob {m.group(1)} is missing from {self.root} and from the audit store",
                hint="side files live on the host that recorded the run, and ship with its events",
            )
        return data.decode()

    def check(self, ref: str) -> str | None:
        """None when the side file (here, or in the audit store) matches its reference, else what is wrong."""
        m = BLOB_REF.match(ref)
        if not m:
            return f"{ref!r} is not a blob reference"
        data = self._content(m.group(1))
        if data is None:
            return f"side file {self.path(m.group(1))} is missing (and not in the audit store)"
        if hashlib.sha256(data).hexdigest() != m.group(1) or len(data) != int(m.group(2)):
            return f"side file {m.group(1)} does not match its hash or size"
        return None

    def externalize(self, payload: dict[str, Any], size: int, limit: int = MAX_EVENT_BYTES) -> dict[str, Any]:
        """Move the largest strings of `payload` (of encoded size `size`) out until it fits `limit`."""
        leaves: list[tuple[int, list[Any] | dict[str, Any], str | int]] = []
        _collect(payload, leaves)
        leaves.sort(key=lambda leaf: leaf[0], reverse=True)
        for length, parent, key in leaves:
            if size <= limit or length < _MIN_EXTERNAL:
                break
            text = parent[key]  # type: ignore[index]
            ref = self.put(text)
            parent[key] = ref  # type: ignore[index]
            size -= len(text.encode()) - len(ref)
        return payload

    def refs(self, obj: Any) -> list[str]:
        out: list[str] = []
        _find_refs(obj, out)
        return out


def _collect(obj: Any, out: list[tuple[int, Any, Any]]) -> None:
    items: Any = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        if isinstance(value, str):
            out.append((len(value), obj, key))
        elif isinstance(value, dict | list):
            _collect(value, out)


def _find_refs(obj: Any, out: list[str]) -> None:
    if isinstance(obj, str):
        if obj.startswith("[blob:") and BLOB_REF.match(obj):
            out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _find_refs(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _find_refs(v, out)
