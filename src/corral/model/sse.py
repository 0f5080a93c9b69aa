"""Reading Messages API responses: an incremental SSE parser and a response reassembler.

The proxy passes upstream bytes through untouched and feeds a copy to these, so what the audit records
is rebuilt from exactly what Claude Code received.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from corral.events import ToolUseBlock


@dataclass
class SseEvent:
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseParser:
    """Splits a byte stream into SSE events as chunks arrive, wherever the chunk boundaries fall."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return
            raw, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            event = _parse_block(raw.decode("utf-8", errors="replace"))
            if event is not None:
                yield event

    def close(self) -> Iterator[SseEvent]:
        """Whatever complete event sits in the buffer when the stream ends without a blank line."""
        raw, self._buffer = self._buffer, b""
        event = _parse_block(raw.decode("utf-8", errors="replace")) if raw.strip() else None
        if event is not None:
            yield event


def _parse_block(block: str) -> SseEvent | None:
    name = "message"
    data: list[str] = []
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    if not data:
        return None
    return SseEvent(name, "\n".join(data))


@dataclass
class _Block:
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    partial_json: str = ""
    input: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reassembled:
    """The parts of one response the audit records."""

    response_id: str = ""
    model: str = ""
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    text: str = ""
    thinking: str = ""
    tool_uses: list[ToolUseBlock] = field(default_factory=list)
    error: str = ""


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _input_tokens(usage: dict[str, Any]) -> int:
    """All input the request consumed, cached or not."""
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(int(usage.get(k) or 0) for k in keys)


class Reassembler:
    """Rebuilds a Messages response from its stream events (or from a whole JSON response)."""

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}
        self.result = Reassembled()

    def add(self, event: SseEvent) -> None:
        try:
            data = event.json()
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type", event.event)
        if kind == "message_start":
            message = data.get("message") or {}
            self.result.response_id = str(message.get("id", ""))
            self.result.model = str(message.get("model", ""))
            usage = message.get("usage") or {}
            self.result.input_tokens = _input_tokens(usage)
            self.result.output_tokens = int(usage.get("output_tokens") or 0)
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            self._blocks[int(data.get("index", 0))] = _Block(
                type=str(block.get("type", "")),
                text=str(block.get("text") or block.get("thinking") or ""),
                id=str(block.get("id", "")),
                name=str(block.get("name", "")),
                input=_as_dict(block.get("input")),
            )
        elif kind == "content_block_delta":
            current = self._blocks.setdefault(int(data.get("index", 0)), _Block(type="text"))
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                current.text += str(delta.get("text", ""))
            elif dtype == "thinking_delta":
                current.text += str(delta.get("thinking", ""))
            elif dtype == "input_json_delta":
                current.partial_json += str(delta.get("partial_json", ""))
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            if "stop_reason" in delta:
                self.result.stop_reason = delta["stop_reason"]
            usage = data.get("usage") or {}
            if usage.get("output_tokens") is not None:
                self.result.output_tokens = int(usage["output_tokens"])
            if _input_tokens(usage):
                self.result.input_tokens = _input_tokens(usage)
        elif kind == "error":
            error = data.get("error") or {}
            self.result.stop_reason = "error"
            self.result.error = f"{error.get('type', 'error')}: {error.get('message', '')}"

    def add_message(self, message: dict[str, Any]) -> None:
        """A whole (non-streaming) Messages response."""
        if message.get("type") == "error":
            self.add(SseEvent("error", json.dumps(message)))
            return
        self.result.response_id = str(message.get("id", ""))
        self.result.model = str(message.get("model", ""))
        self.result.stop_reason = message.get("stop_reason")
        usage = message.get("usage") or {}
        self.result.input_tokens = _input_tokens(usage)
        self.result.output_tokens = int(usage.get("output_tokens") or 0)
        for index, block in enumerate(message.get("content") or []):
            if isinstance(block, dict):
                self._blocks[index] = _Block(
                    type=str(block.get("type", "")),
                    text=str(block.get("text") or block.get("thinking") or ""),
                    id=str(block.get("id", "")),
                    name=str(block.get("name", "")),
                    input=_as_dict(block.get("input")),
                )

    def finish(self) -> Reassembled:
        texts: list[str] = []
        thinking: list[str] = []
        tools: list[ToolUseBlock] = []
        for _, block in sorted(self._blocks.items()):
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "thinking":
                thinking.append(block.text)
            elif block.type in ("tool_use", "server_tool_use"):
                parsed = block.input
                if block.partial_json:
                    try:
                        loaded = json.loads(block.partial_json)
                        parsed = loaded if isinstance(loaded, dict) else {"_value": loaded}
                    except ValueError:
                        # A cut-off stream: keep what arrived rather than lose the call from the audit.
                        parsed = {"_unparsed": block.partial_json}
                tools.append(ToolUseBlock(id=block.id, name=block.name, input=parsed))
        text = "".join(texts)
        if self.result.error:
            text = (
                f"{text}\n[upstream error] {self.result.error}"
                if text
                else f"[upstream error] {self.result.error}"
            )
        self.result.text = text
        self.result.thinking = "".join(thinking)
        self.result.tool_uses = tools
        return self.result
