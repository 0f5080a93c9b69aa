"""The dashboard's exit: every text response (pages, the JSON API, the SSE timeline) is redacted by the
process redactor before it leaves, whoever wrote the data and whenever.

Pages are redacted earlier too, value by value before Jinja escapes them (`finalize`): once escaped,
a value holding `<`, `>`, `&` or a quote no longer reads as any of its forms. This layer is the net
under that: JSON, SSE and anything a template inserted as markup. An SSE response's headers go out at
once and each message is redacted whole as soon as it is sent (a live timeline must not wait for the
next event); any other streamed body goes through a `StreamRedactor`, so a value split across two
chunks is still found.
"""

from __future__ import annotations

import codecs
from typing import Any

from markupsafe import Markup
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.audit.redact import StreamRedactor, process_redactor

_TEXT_TYPES = (b"text/", b"application/json", b"application/javascript", b"image/svg+xml")


def finalize(value: Any) -> Any:
    """Jinja's `finalize`: each `{{ value }}` redacted before it is escaped (markup stays markup)."""
    if isinstance(value, Markup):
        return Markup(process_redactor().redact_text(str(value)))
    if isinstance(value, str):
        return process_redactor().redact_text(value)
    return value


class RedactingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None  # held until the first body, whose length may change
        redacting = sse = False
        stream: StreamRedactor | None = None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")

        async def redacting_send(message: Message) -> None:
            nonlocal start, redacting, sse, stream
            redactor = process_redactor()
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                redacting = redactor.active and content_type.startswith(_TEXT_TYPES)
                sse = content_type.startswith(b"text/event-stream")
                if redacting and sse:
                    # Sent at once: an SSE client waits for these headers before any event exists.
                    headers = [(k, v) for k, v in message.get("headers", []) if k != b"content-length"]
                    await send({**message, "headers": headers})
                    return
                if redacting:
                    start = message
                    return
            if not redacting or message["type"] != "http.response.body":
                await send(message)
                return
            more = bool(message.get("more_body", False))
            text = decoder.decode(message.get("body", b""), final=not more)
            if sse or (stream is None and not more):  # an SSE message, or a whole body at once
                body = redactor.redact_text(text).encode()
            else:
                stream = stream or StreamRedactor(redactor)
                body = (stream.feed(text) + ("" if more else stream.flush())).encode()
            if start is not None:
                headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                if not more and stream is None:
                    headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                start = None
            await send({"type": "http.response.body", "body": body, "more_body": more})

        await self.app(scope, receive, redacting_send)
