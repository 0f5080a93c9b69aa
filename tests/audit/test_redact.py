"""Redaction: a secret printed by a tool, raw, base64 or URL-encoded, never reaches the spool or store."""

from __future__ import annotations

import base64
import os
from urllib.parse import quote, quote_plus

import pytest

from corral.audit.log import AuditLog
from corral.audit.redact import Redactor, StreamRedactor
from corral.errors import ConfigError
from corral.events import ShellCommand, ToolCall, ToolResult
from corral.settings import Settings
from tests.audit.conftest import SECRET, file_bytes


def encoded_forms(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "raw": secret,
        "b64": base64.b64encode(raw).decode(),
        "b64-nopad": base64.b64encode(raw).decode().rstrip("="),
        "b64-url": base64.urlsafe_b64encode(raw).decode(),
        "url": quote(secret, safe=""),
        "url-plus": quote_plus(secret + " x"),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
    }


def embedded_b64(secret: str, offset: int) -> str:
    """The secret inside a larger file that was base64-encoded as a whole (`base64 .env`)."""
    blob = b"K" * offset + b"API_TOKEN=" + secret.encode() + b"\nDEBUG=1\n"
    return base64.b64encode(blob).decode()


@pytest.mark.parametrize("form", list(encoded_forms(SECRET)))
def test_each_form_is_redacted(form: str) -> None:
    r = Redactor()
    r.register("API_TOKEN", SECRET)
    text = f"before {encoded_forms(SECRET)[form]} after"
    out = r.redact_text(text)
    assert "[secret:API_TOKEN]" in out
    assert encoded_forms(SECRET)[form] not in out


@pytest.mark.parametrize("offset", range(6))
def test_secret_inside_a_larger_base64_blob_at_any_alignment(offset: int) -> None:
    r = Redactor()
    r.register("API_TOKEN", SECRET)
    encoded = embedded_b64(SECRET, offset)
    out = r.redact_text(encoded)
    assert "[secret:API_TOKEN]" in out
    # What is left cannot be decoded back into the secret, nor into most of it.
    leftover = out.replace("[secret:API_TOKEN]", "")
    for piece in (leftover, leftover[: len(leftover) // 4 * 4]):
        decoded = base64.b64decode(piece + "=" * (-len(piece) % 4), validate=False)
        assert SECRET[2:-2].encode() not in decoded


def test_percent_escapes_in_lower_case_and_keys_and_nesting() -> None:
    r = Redactor()
    r.register("K", "p@ss/w:rd+42")
    lower = quote("p@ss/w:rd+42", safe="").lower()  # %40, %2f, %3a, %2b
    payload = {"a": [{"p@ss/w:rd+42": f"x {lower} y"}], "n": 3, "b": True}
    out = r.redact(payload)
    assert out == {"a": [{"[secret:K]": "x [secret:K] y"}], "n": 3, "b": True}


def test_short_values_are_refused() -> None:
    r = Redactor()
    with pytest.raises(ConfigError, match="too short"):
        r.register("PORT", "5432")
    with pytest.raises(ConfigError, match="redaction label"):
        r.register("bad name!", SECRET)


def test_unregistered_text_is_untouched() -> None:
    r = Redactor()
    payload = {"x": "nothing secret here"}
    assert r.redact(payload) is payload
    r.register("T", SECRET)
    assert r.redact({"x": "nothing secret here"}) == {"x": "nothing secret here"}


def test_a_value_registered_after_redacting_began_is_redacted_too() -> None:
    """Registration between redactions (a vault secret resolved mid-run) is seen by the next one, in
    every entry point, and registering a value again changes nothing."""
    r = Redactor()
    assert not r.active and r.redact_text(SECRET) == SECRET
    r.register("FIRST", "first-value+/=")
    assert r.active and r.redact_text("a first-value+/= b") == "a [secret:FIRST] b"
    r.register("LATER", SECRET)
    assert r.redact_text(f"{SECRET} first-value+/=") == "[secret:LATER] [secret:FIRST]"
    assert r.redact({"k": [SECRET]}) == {"k": ["[secret:LATER]"]}
    shown, held = r.redact_head(f"x {SECRET} " + "y" * len(SECRET) * 4)
    assert shown.startswith("x [secret:LATER] ") and SECRET not in shown + held
    r.register("AGAIN", SECRET)  # already known: keeps its first name
    assert r.redact_text(SECRET) == "[secret:LATER]"


def test_a_longer_value_registered_later_widens_what_a_stream_holds_back() -> None:
    r = Redactor()
    r.register("SHORT", "short-1")
    long_value = "L" * 200 + "-tail"
    r.register("LONG", long_value)
    stream = StreamRedactor(r)
    shown = stream.feed("start " + long_value[:150]) + stream.feed(long_value[150:] + " end")
    assert shown + stream.flush() == "start [secret:LONG] end"


def test_secret_never_reaches_spool_or_store(settings: Settings) -> None:
    """Grep the raw bytes of the spool (before shipping) and of the SQLite store (after)."""
    audit = AuditLog.open(settings, background=False)
    recorder = audit.for_run("run-redact", secrets={"API_TOKEN": SECRET})
    forms = [*encoded_forms(SECRET).values(), *(embedded_b64(SECRET, k) for k in range(3))]
    for i, form in enumerate(forms):
        recorder.emit(
            ToolCall(tool_name="Bash", tool_call_id=f"t{i}", input={"command": f"echo {form}"}), durable=True
        )
        recorder.emit(ToolResult(tool_name="Bash", tool_call_id=f"t{i}", output=f"out: {form}\n"))
        recorder.emit(ShellCommand(tool_call_id=f"t{i}", command="printenv", exit_code=0, output=form))
    spooled = file_bytes(settings.spool_dir)
    assert b"[secret:API_TOKEN]" in spooled  # the spool really holds the events...
    for form in forms:
        assert form.encode() not in spooled  # ...but no form of the secret
    assert SECRET[1:-1].encode() not in spooled
    recorder.close()
    audit.close()
    stored = file_bytes(settings.home)
    assert stored.count(b"[secret:API_TOKEN]") >= len(forms) * 3
    for form in forms:
        assert form.encode() not in stored
    assert SECRET[1:-1].encode() not in stored
    assert not any(p.name.endswith(".jsonl") for p in settings.spool_dir.iterdir())  # shipped and removed
    assert os.path.getsize(settings.audit_db) > 0


def test_the_trie_pattern_matches_what_a_longest_first_alternation_matches() -> None:
    import random
    import re

    from corral.audit.redact import _trie_pattern

    rng = random.Random(14)
    for _ in range(300):
        forms = {
            "".join(rng.choice("ab%=") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 8))
        }
        text = "".join(rng.choice("ab%=xy") for _ in range(40))
        flat = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
        trie = re.compile(_trie_pattern(forms))
        assert [m.span() for m in trie.finditer(text)] == [m.span() for m in flat.finditer(text)], forms


def test_many_secrets_and_a_long_one_still_redact() -> None:
    r = Redactor()
    values = [f"token-{i:03d}-{os.urandom(8).hex()}" for i in range(40)]
    for i, value in enumerate(values):
        r.register(f"S{i}", value)
    pem = "-----BEGIN KEY-----" + base64.b64encode(os.urandom(3000)).decode() + "-----END KEY-----"
    r.register("PEM", pem)
    text = " ".join(
        [values[17], base64.b64encode(values[3].encode()).decode(), values[39].encode().hex(), pem]
    )
    assert r.redact_text(text) == "[secret:S17] [secret:S3] [secret:S39] [secret:PEM]"


def test_names_in_tells_which_secrets_a_text_holds_in_any_form() -> None:
    redactor = Redactor()
    assert redactor.names_in(f"plain {SECRET}") == set()  # nothing registered: nothing found
    other = "0th3r-v4lue-of-length"
    redactor.register("API_TOKEN", SECRET)
    redactor.register("DB_PASSWORD", other)
    for kind, form in encoded_forms(SECRET).items():
        assert redactor.names_in(f"a {form} b") == {"API_TOKEN"}, kind
    assert redactor.names_in(f"{SECRET} and {base64.b64encode(other.encode()).decode()}") == {
        "API_TOKEN",
        "DB_PASSWORD",
    }
    assert redactor.names_in(SECRET[:-1] + " and unrelated text") == set()
