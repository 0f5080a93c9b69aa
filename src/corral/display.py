"""Text that an agent may have written, made safe to show a person (DESIGN invariant 8).

A terminal obeys what it is sent: an escape sequence in a tool's output can paint a fake "all checks
passed", clear the screen, retitle the window or set the clipboard (OSC 52). Everything an agent could
have written (tool output, commands, file names, model text, commit messages, failure reasons) passes
through `visible` before a CLI command prints it, so each control character shows as a visible
escape such as `\\x1b` and does nothing. `json_text` does the same for JSON output, in JSON's own
escape syntax, since `ensure_ascii=False` leaves C1 controls and bidirectional overrides raw.

Each also redacts what this process has resolved (`corral.audit.redact.process_redactor`) before it
escapes or lays out anything: a table cell that wraps or cuts a value would show a piece of it that
no form matches any more. Cut text after it has been made visible, never before.
"""

from __future__ import annotations

import json
import re
from typing import Any

from corral.audit.redact import process_redactor

_KEEP = "\n\t"

# C0 controls (but newline and tab), DEL, C1 controls; and the invisible format characters that
# reorder or hide text (bidi embeddings, overrides and isolates, zero-width marks, the BOM).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control and invisible format character shown as a visible escape.

    A literal backslash is left as it is: the point is that nothing acts on the terminal, and an
    agent that prints `\\x1b` as four characters shows exactly those four characters.
    """
    return _UNSAFE.sub(_escape, process_redactor().redact_text(text))


def visible_line(text: str) -> str:
    """Like `visible`, and newlines and tabs too: for one-line fields such as a table cell."""
    return visible(text).replace("\n", "\\n").replace("\t", "\\t")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group(0)):04x}"


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """JSON for a terminal: valid JSON, with every unsafe character written as a `\\uXXXX` escape."""
    text = json.dumps(process_redactor().redact(data), indent=indent, default=str, ensure_ascii=False)
    return _UNSAFE.sub(_json_escape, text)


def json_line(raw: str) -> str:
    """A stored JSON document (one line), re-escaped for a terminal without re-parsing it."""
    return _UNSAFE.sub(_json_escape, process_redactor().redact_text(raw))
