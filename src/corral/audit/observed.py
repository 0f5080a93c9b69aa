"""`ObservedSink`: an EventSink that also shows each stored event to observers (progress, --json)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from corral.audit import EventSink
from corral.events import Event

E = TypeVar("E", bound=Event)
Observer = Callable[[Event], None]


class ObservedSink:
    """Observers see the event as stored (run id, seq and hashes filled, secrets redacted)."""

    def __init__(self, inner: EventSink, observers: list[Observer]) -> None:
        self._inner = inner
        self._observers = observers

    def emit(self, event: E, *, durable: bool = False) -> E:
        stored = self._inner.emit(event, durable=durable)
        for observer in self._observers:
            observer(stored)
        return stored

    def register_secret(self, name: str, value: str) -> None:
        self._inner.register_secret(name, value)
