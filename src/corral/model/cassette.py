"""Cassettes: a run's recorded model responses, served back in order instead of calling a model.

A cassette is built from the audit log's `model.request` / `model.response` pairs (what the proxy
recorded, already redacted), and written as portable JSON by `corral audit export --cassette`.
Re-sampling a model is never deterministic, so a replay never re-samples: the scripted model plays
the cassette.

Claude Code sends side requests (no tools: titles, summaries) concurrently with the main thread, so
responses are matched by what a request is, not only by arrival order: the next unserved exchange
with the same kind (tools or none) and the same message count, else the next of the same kind.
Thinking blocks are not replayed: their signatures cannot be re-created, and Claude Code does not
need them to act on the tool calls that follow.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.audit.redact import process_redactor
from corral.errors import PlaybookError
from corral.events import AnyEvent, ModelRequest, ModelResponse, RunCreated, ToolResult
from corral.model.scripted import anthropic_http_error, estimate_tokens, new_message_id, sse_events

CASSETTE_FORMAT: Literal["corral-cassette/1"] = "corral-cassette/1"
EXHAUSTED_TEXT = "corral replay: the cassette has no recorded response for this request."


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Exchange(_Model):
    """One recorded request (its shape) and the response the model gave."""

    main: bool
    """The request carried tools: the main conversation (or a subagent), not a side request."""
    messages: int
    last_user: str = ""
    response_id: str = ""
    model: str = ""
    stop_reason: str = "end_turn"
    content: list[dict[str, Any]]
    input_tokens: int = 0
    output_tokens: int = 0


class RecordedToolResult(_Model):
    tool_name: str
    tool_call_id: str
    output: str
    is_error: bool = False


class Cassette(_Model):
    format: Literal["corral-cassette/1"] = CASSETTE_FORMAT
    run_id: str = ""
    task: str = ""
    base_commit: str = ""
    model: str = ""
    small_model: str = ""
    config_hash: str = ""
    exchanges: list[Exchange]
    tool_results: list[RecordedToolResult] = []
    """What each tool returned in the recording, for the gateway to serve on replay."""

    @property
    def source(self) -> str:
        return f"cassette:{self.run_id or 'file'}"

    @classmethod
    def from_events(cls, events: Iterable[AnyEvent], run_id: str = "") -> Cassette:
        requests: dict[str, ModelRequest] = {}
        exchanges: list[Exchange] = []
        results: list[RecordedToolResult] = []
        created: RunCreated | None = None
        for event in events:
            if isinstance(event, RunCreated):
                created = event
            elif isinstance(event, ModelRequest) and event.operation == "chat":
                requests[event.exchange_id] = event
            elif isinstance(event, ModelResponse) and event.exchange_id in requests:
                if event.stop_reason == "error":
                    continue  # an upstream failure was never a model response to replay
                request = requests[event.exchange_id]
                exchanges.append(_exchange(request, event))
            elif isinstance(event, ToolResult):
                results.append(
                    RecordedToolResult(
                        tool_name=event.tool_name,
                        tool_call_id=event.tool_call_id,
                        output=event.output,
                        is_error=event.is_error,
                    )
                )
        return cls(
            run_id=run_id or (created.run_id if created else ""),
            task=created.task if created else "",
            base_commit=created.base_commit if created else "",
            model=created.model if created else "",
            small_model=created.small_model if created else "",
            config_hash=created.config_hash if created else "",
            exchanges=exchanges,
            tool_results=results,
        )

    def dump(self, path: Path) -> None:
        # Built from the (redacted) audit log; redacted again for whatever this process resolved since.
        path.write_text(
            process_redactor().redact_text(self.model_dump_json(indent=1)) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, path: Path) -> Cassette:
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError, ValueError) as exc:
            raise PlaybookError(
                f"{path}: not a corral cassette: {exc}",
                hint="write one with `corral audit export RUN --cassette FILE`",
            ) from exc


def is_cassette_file(path: Path) -> bool:
    """A JSON file whose `format` is a cassette's (playbooks are YAML mappings with `turns`)."""
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("format") == CASSETTE_FORMAT


def _exchange(request: ModelRequest, response: ModelResponse) -> Exchange:
    content: list[dict[str, Any]] = []
    if response.text:
        content.append({"type": "text", "text": response.text})
    for use in response.tool_uses:
        content.append({"type": "tool_use", "id": use.id, "name": use.name, "input": use.input})
    if not content:
        content.append({"type": "text", "text": ""})
    return Exchange(
        main=request.tools > 0,
        messages=request.messages,
        last_user=request.last_user,
        response_id=response.response_id,
        model=response.response_model or response.request_model,
        stop_reason=response.stop_reason or "end_turn",
        content=content,
        input_tokens=response.input_tokens,
        output_tokens=response.output_tokens,
    )


class CassettePlayer:
    """Serves a cassette's exchanges; thread-safe, since Claude Code's requests overlap."""

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette
        self._served = [False] * len(cassette.exchanges)
        self._lock = threading.Lock()
        self.unmatched = 0
        """Requests the cassette had no response for: the replay has diverged."""

    def next_for(self, main: bool, messages: int) -> Exchange | None:
        with self._lock:
            fallback = None
            for index, exchange in enumerate(self.cassette.exchanges):
                if self._served[index] or exchange.main != main:
                    continue
                if exchange.messages == messages:
                    self._served[index] = True
                    return exchange
                if fallback is None:
                    fallback = index
            if fallback is not None and not main:
                self._served[fallback] = True
                return self.cassette.exchanges[fallback]
            self.unmatched += 1
            return None


def cassette_app(cassette: Cassette) -> Starlette:
    """An ASGI app answering the Messages API from `cassette` (what `Upstream.cassette` serves)."""
    player = CassettePlayer(cassette)

    async def messages(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise HTTPException(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise HTTPException(400, "request body must be a JSON object")
        history = body.get("messages")
        count = len(history) if isinstance(history, list) else 0
        exchange = player.next_for(bool(body.get("tools")), count)
        model = str(body.get("model", ""))
        if exchange is None:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": EXHAUSTED_TEXT}]
            stop, message_id, tokens = "end_turn", new_message_id(), estimate_tokens(json.dumps(history))
        else:
            blocks, stop = exchange.content, exchange.stop_reason
            message_id = exchange.response_id or new_message_id()
            tokens = exchange.input_tokens
        if body.get("stream"):

            async def stream() -> AsyncIterator[bytes]:
                for chunk in sse_events(message_id, model, blocks, stop, tokens):
                    yield chunk

            return StreamingResponse(stream(), media_type="text/event-stream")
        usage = {"input_tokens": tokens, "output_tokens": estimate_tokens(json.dumps(blocks))}
        return JSONResponse(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            }
        )

    async def count_tokens(request: Request) -> Response:
        return JSONResponse(
            {"input_tokens": estimate_tokens((await request.body()).decode(errors="replace"))}
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": "cassette", "exchanges": len(cassette.exchanges)})

    app = Starlette(
        routes=[
            Route("/", health, methods=["GET"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        ],
        exception_handlers={HTTPException: anthropic_http_error},
    )
    app.state.player = player
    return app
