"""A bounded tail of a stream: the last `limit` bytes of whatever the sandbox sends, never more.

Output from inside a sandbox (a checks command, Claude Code's stderr) is hostile in size as well as in
content: it is streamed into a `Tail`, which keeps the newest bytes and counts the rest, so the
orchestrator's memory stays flat whatever the agent prints.
"""

from __future__ import annotations

from collections import deque


class Tail:
    """The last `limit` bytes pushed into it, and how many bytes before them were dropped."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"a tail needs a positive limit, not {limit}")
        self.limit = limit
        self.dropped = 0
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def push(self, data: bytes) -> None:
        if len(data) >= self.limit:
            # One chunk fills the tail alone: keep only its end (and never hold more than limit).
            self.dropped += self._size + len(data) - self.limit
            self._chunks.clear()
            self._chunks.append(bytes(data[-self.limit :]))
            self._size = self.limit
            return
        self._chunks.append(bytes(data))
        self._size += len(data)
        while self._size > self.limit:
            excess = self._size - self.limit
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
                self.dropped += len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess
                self.dropped += excess

    def push_line(self, line: str) -> None:
        """Push one text line (a callback's unit, as Claude Code's stderr arrives)."""
        self.push(line.encode(errors="replace") + b"\n")

    def __len__(self) -> int:
        return self._size

    def data(self) -> bytes:
        return b"".join(self._chunks)

    def text(self) -> str:
        """The kept bytes as text; a character the cut split in two becomes U+FFFD."""
        return self.data().decode(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()
