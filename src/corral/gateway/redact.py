"""Scrub known secret values (and their base64 and URL-encoded forms) from anything leaving the gateway.

The audit sink redacts too, but the gateway hashes the arguments it audits and returns upstream results
to the agent, so it must redact before either: the agent, the audit log and the transcript never see a
credential, even when an upstream echoes one back.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any


class Redactor:
    def __init__(self) -> None:
        self._needles: list[tuple[str, str]] = []

    def add(self, name: str, value: str) -> None:
        if len(value) < 4:  # too short to redact without mangling ordinary text
            return
        marker = f"[secret:{name}]"
        forms = {
            value,
            base64.b64encode(value.encode()).decode(),
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value),
        }
        for form in forms:
            if (form, marker) not in self._needles:
                self._needles.append((form, marker))
        # Longest first, so a value that contains another is replaced whole.
        self._needles.sort(key=lambda pair: -len(pair[0]))

    @property
    def active(self) -> bool:
        return bool(self._needles)

    def text(self, value: str) -> str:
        for needle, marker in self._needles:
            if needle in value:
                value = value.replace(needle, marker)
        return value

    def value(self, data: Any) -> Any:
        """A deep copy of JSON-like data with every string (keys included) redacted."""
        if not self._needles:
            return data
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {self.text(str(k)): self.value(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.value(v) for v in data]
        return data
