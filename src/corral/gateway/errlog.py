"""An upstream's stderr log, redacted on its way to the file.

A stdio upstream holds its credential in its environment, and a server that logs its configuration or
an error from its API can print it. Its stderr is therefore not the file itself but a pipe, read by a
thread that passes what arrives through a `StreamRedactor` (a value split across two reads is still
found) and appends it to the log file.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from corral.audit.redact import StreamRedactor, process_redactor


def _copy(read_fd: int, path: Path) -> None:
    stream = StreamRedactor(process_redactor())
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    with open(path, "a", encoding="utf-8") as log, os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            log.write(stream.feed(decoder.decode(chunk)))
            log.flush()
        log.write(stream.feed(decoder.decode(b"", final=True)) + stream.flush())


@contextlib.contextmanager
def redacted_errlog(path: Path | None) -> Iterator[TextIO]:
    """A writable file to give a child as its stderr; what it writes lands in `path`, redacted.
    Without a path, the child's stderr is discarded."""
    if path is None:
        with open(os.devnull, "a", encoding="utf-8") as null:
            yield null
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    copier = threading.Thread(target=_copy, args=(read_fd, path), name=f"errlog {path.name}", daemon=True)
    copier.start()
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    try:
        yield writer
    finally:
        # Not joined: the copier ends by itself once the child (and any process it left holding the
        # pipe) has closed it, and waiting here would stall the gateway's event loop meanwhile.
        writer.close()
