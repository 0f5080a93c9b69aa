"""Redaction of known secret values before anything is persisted.

A registered value is replaced by `[secret:NAME]` in every string of an event payload (keys too), in
its raw form, its base64 forms (standard and URL-safe, with and without padding), its URL-encoded
forms, its hex forms (lower and upper case, as `xxd -p` prints a short value unwrapped), and as the
stable middle of its base64 when it sits at any byte offset inside a larger encoded blob (a tool that
prints `base64 .env` encodes the secret at an arbitrary 3-byte alignment, so the straight encoding
alone would miss it).

Text that leaves in pieces (a stream, a child's stderr, a console's writes) goes through
`StreamRedactor`, which holds back only the tail that a later piece could still complete into a form.
Every run's redactor also feeds the process's (`process_redactor`), so output that no single run owns
(the CLI's streams, logging, the dashboard) redacts every value this process has resolved.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from corral.errors import ConfigError

MIN_SECRET_LENGTH = 6
"""Shorter values would redact noise (`true`, `admin`, port numbers) all over the log."""

_MIN_FRAGMENT = 8
"""A base64 fragment shorter than this could match unrelated base64 by chance, so it is not used."""

_PCT = re.compile(r"%[0-9A-F]{2}")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _b64_forms(raw: bytes) -> set[str]:
    std = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    return {std, std.rstrip("="), url, url.rstrip("=")}


def _aligned_fragments(raw: bytes) -> set[str]:
    """Base64 of the value's whole 3-byte groups at each of the three alignments.

    When the value starts at byte offset k of a larger encoded buffer, the characters that encode the
    groups lying wholly inside the value do not depend on the surrounding bytes: those are what we
    can find. The first partial group and the last one are lost, a few characters of the value.
    """
    out: set[str] = set()
    for skip in range(3):
        body = raw[skip:]
        body = body[: len(body) - len(body) % 3]
        if len(body) * 4 // 3 < _MIN_FRAGMENT:
            continue
        out.add(base64.b64encode(body).decode())
        out.add(base64.urlsafe_b64encode(body).decode())
    return out


def secret_forms(value: str) -> set[str]:
    """Every form of `value` that the redactor looks for."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value)}
    # Percent escapes are case-insensitive: %2f as well as %2F.
    forms |= {_PCT.sub(lambda m: m.group(0).lower(), f) for f in list(forms) if "%" in f}
    forms |= _b64_forms(raw) | _aligned_fragments(raw)
    forms |= {raw.hex(), raw.hex().upper()}
    return {f for f in forms if f}


def _trie_pattern(forms: Iterable[str]) -> str:
    """One regex for all forms, as a trie: at each position only the forms that share the text's
    next character are tried, so the cost stays near one pass however many secrets are registered
    (a flat alternation tries every form at every position). Greedy, so at one position the longest
    form wins: a whole base64 encoding over its own aligned fragment."""
    trie: dict[str, Any] = {}
    for form in forms:
        node = trie
        for char in form:
            node = node.setdefault(char, {})
        node[""] = {}
    return _node_pattern(trie)


def _node_pattern(node: dict[str, Any]) -> str:
    ends = "" in node
    branches = []
    for char in sorted(k for k in node if k):
        literal, child = char, node[char]
        while len(child) == 1 and "" not in child:  # a chain with no branch is one literal
            ((char, child),) = child.items()
            literal += char
        branches.append(re.escape(literal) + _node_pattern(child))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if ends:
        return "(?:" + body + ")?"
    return body


class Redactor:
    """Thread-safe: registration swaps in a new table of forms; `redact` reads one snapshot.

    The pattern is compiled when text is first redacted after a registration that brought a new form,
    not at each registration: compiling the trie of many long forms takes seconds, and a run (or a
    long-lived server, whose process redactor hears every run's values) registers many values at once,
    mostly ones it already has.

    `forward_to` is told every registration too (a run's redactor forwards to the process's)."""

    def __init__(self, forward_to: Redactor | None = None) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}  # form -> name
        self._pattern: re.Pattern[str] | None = None
        self._longest = 0
        """The longest registered form's length."""
        self._forward = forward_to

    def register(self, name: str, value: str) -> None:
        if not _NAME.match(name):
            raise ConfigError(
                f"secret name {name!r} cannot be used as a redaction label",
                hint="use letters, digits, '_', '.', ':' or '-' (at most 64 characters)",
            )
        if len(value) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"secret {name!r} is {len(value)} characters long, too short to redact safely",
                hint=f"secret values must be at least {MIN_SECRET_LENGTH} characters; "
                "a shorter one would redact unrelated text everywhere in the audit log",
            )
        forms = secret_forms(value)
        with self._lock:
            new = {form: name for form in forms if form not in self._names}
            if new:
                # A new table, not an update in place: a reader holds a snapshot while it substitutes.
                self._names = {**self._names, **new}
                self._longest = max(self._longest, *map(len, new))
                self._pattern = None
        if self._forward is not None:
            self._forward.register(name, value)

    @property
    def active(self) -> bool:
        return bool(self._names)

    def _current(self) -> re.Pattern[str] | None:
        """The pattern of every registered form, compiled now if a registration changed the table."""
        pattern = self._pattern
        if pattern is None and self._names:
            with self._lock:
                if self._pattern is None:
                    self._pattern = re.compile(_trie_pattern(self._names))
                pattern = self._pattern
        return pattern

    def redact_text(self, text: str) -> str:
        pattern = self._current()
        if pattern is None:
            return text
        names = self._names
        return pattern.sub(lambda m: f"[secret:{names[m.group(0)]}]", text)

    def names_in(self, text: str) -> set[str]:
        """The names of the registered secrets that `text` holds, in any of their forms."""
        pattern = self._current()
        if pattern is None:
            return set()
        names = self._names
        return {names[m.group(0)] for m in pattern.finditer(text)}

    def redact_head(self, text: str) -> tuple[str, str]:
        """`text` split where no text appended later can change the redaction before the split: the
        part before it redacted, and the tail held back. A form starting before the split lies
        wholly inside `text` (the split is the longest form's length minus one from the end), so it
        is found now; one starting in the tail may still be completed by the next piece."""
        pattern = self._current()
        if pattern is None:
            return text, ""
        names, cut = self._names, len(text) - self._longest + 1
        parts: list[str] = []
        pos = 0
        for match in pattern.finditer(text):
            if match.start() >= cut:
                break
            parts += [text[pos : match.start()], f"[secret:{names[match.group(0)]}]"]
            pos = match.end()
        end = max(pos, cut)
        parts.append(text[pos:end])
        return "".join(parts), text[end:]

    def redact(self, obj: Any) -> Any:
        """Return `obj` with every registered form replaced, recursing through dicts and lists."""
        if not self._names:
            return obj
        return self._walk(obj)

    def _walk(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.redact_text(obj)
        if isinstance(obj, dict):
            return {self.redact_text(k) if isinstance(k, str) else k: self._walk(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self._walk(v) for v in obj]
        return obj


class StreamRedactor:
    """Redacts a text that arrives in pieces, so that a value split across two pieces is still found.

    `feed` returns what may be shown now; `flush` returns the held tail, redacted, once the stream
    ends or must be shown whole. What `feed` and `flush` return, joined, is `redact_text` of the
    joined pieces, wherever the pieces were split."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, text: str) -> str:
        shown, self._held = self._redactor.redact_head(self._held + text)
        return shown

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._redactor.redact_text(held)


_PROCESS = Redactor()


def process_redactor() -> Redactor:
    """The redactor of everything this process has resolved (every run's redactor forwards to it)."""
    return _PROCESS
