"""A JSON document on disk, read and rewritten under an exclusive file lock (the local forge and deploy)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from corral.errors import StoreError

M = TypeVar("M", bound=BaseModel)


@contextlib.contextmanager
def locked_json(path: Path, model: type[M], *, write: bool = True) -> Iterator[M]:
    """Yield the parsed document (or a fresh one); on clean exit with `write`, replace it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = model.model_validate_json(path.read_bytes()) if path.exists() else model()
        except ValidationError as exc:
            raise StoreError(
                f"{path} is not a valid {model.__name__} file: {exc}", hint="restore it or move it away"
            ) from exc
        yield data
        if write:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(data.model_dump_json(indent=1), encoding="utf-8")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
