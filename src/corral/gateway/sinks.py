"""A JSON-lines audit sink for `corral gateway serve` outside a run (runs use the audit log's sink)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TypeVar

from corral.events import Event
from corral.gateway.redact import Redactor

E = TypeVar("E", bound=Event)


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._redactor = Redactor()
        self._lock = threading.Lock()
        self._seq = 0
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: E, *, durable: bool = False) -> E:
        with self._lock:
            event.seq = self._seq
            self._seq += 1
            line = self._redactor.text(event.model_dump_json(by_alias=True))
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        return event

    def register_secret(self, name: str, value: str) -> None:
        self._redactor.add(name, value)
