"""A long secret (a private key, a certificate) is redacted in each of its forms, and registering one
is not limited by its length. Fast on purpose: it is part of the mutation run (docs/testing.md), where
test_redact.py's forty-secret case is left out for its time."""

from __future__ import annotations

import base64
import random

from corral.audit.redact import Redactor

# 600 characters: its hex form is 1,200 characters, each of them a step in the redactor's pattern.
LONG = "-----BEGIN KEY-----" + "".join(random.Random(18).choices("abcdefghijklmnop+/=", k=581))


def test_a_long_secret_is_redacted_in_each_of_its_forms() -> None:
    r = Redactor()
    r.register("KEY", LONG)
    r.register("SHORT", "short-secret")
    raw = LONG.encode()
    forms = [
        LONG,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        raw.hex(),
        raw.hex().upper(),
    ]
    for form in forms:
        assert r.redact_text(f"<{form}>") == "<[secret:KEY]>"
    # Inside a larger encoded blob at each byte offset, only the two partial 3-byte groups stay.
    for pad in (b"", b"x", b"xy"):
        blob = base64.b64encode(pad + raw + b"tail").decode()
        redacted = r.redact_text(blob)
        assert "[secret:KEY]" in redacted and len(redacted) < 20 + len("[secret:KEY]")
    assert r.redact_text("short-secret and " + LONG) == "[secret:SHORT] and [secret:KEY]"
