"""The process's own exits: its stdout, its stderr and its log records, redacted by the one redactor.

A CLI command, `corral server` and `corral worker` print and log text that can hold what a run
resolved: an agent's summary, a tool's output, an upstream's error. Every such text leaves through
`sys.stdout`, `sys.stderr` or `logging`, so those three are where `redact_process_output` puts the
process redactor (`corral.audit.redact.process_redactor`, which every run's redactor feeds). The
streams go through a `StreamRedactor`, so a value split across two writes is still found. The host's
model key is registered at once: it is the one secret every corral process can know without asking
a provider.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from corral.audit.redact import MIN_SECRET_LENGTH, StreamRedactor, process_redactor


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what is written before passing it on to `target`.

    Up to the longest form's length is held back until the next write or `flush` (a console flushes
    after each print), so a value written in two pieces is redacted whole."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target
        self._stream = StreamRedactor(process_redactor())
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click tells text streams from binary ones this way
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            shown = self._stream.feed(text)
            if shown:
                self.target.write(shown)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest = self._stream.flush()
            if rest:
                self.target.write(rest)
        self.target.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return getattr(self.target, "errors", None) or "strict"


_factory_lock = threading.Lock()
_factory_installed = False


def _redacting_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redactor = process_redactor()
        if not redactor.active:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when the record is handled
            return record
        record.msg, record.args = redactor.redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redactor.redact_text(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redactor.redact_text(record.stack_info)
        return record

    return factory


def redact_logging() -> None:
    """Redact every log record of this process, whoever logs it and whichever handler writes it."""
    global _factory_installed
    with _factory_lock:
        if not _factory_installed:
            logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
            _factory_installed = True


def redact_process_output(environ: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Wrap `sys.stdout` and `sys.stderr`, redact logging, and register the host's model key.
    Returns the flush to call when the command ends (what the streams still hold)."""
    key = (os.environ if environ is None else environ).get("ANTHROPIC_API_KEY", "")
    if len(key) >= MIN_SECRET_LENGTH:
        process_redactor().register("ANTHROPIC_API_KEY", key)
    redact_logging()
    streams: list[RedactingStream] = []
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if not isinstance(current, RedactingStream):
            current = RedactingStream(current)
            setattr(sys, name, current)
        streams.append(current)

    def flush() -> None:
        for stream in streams:
            stream.flush()

    return flush
