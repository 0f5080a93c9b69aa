"""A secret split across pieces of a stream (SSE chunks, text deltas, a child's stderr, a console's
writes) is redacted as if the stream had arrived whole, at every split offset, in every form."""

from __future__ import annotations

import base64
import itertools
from urllib.parse import quote

import pytest

from corral.audit.redact import Redactor, StreamRedactor, process_redactor, secret_forms

# Chosen so that its encodings hold '+', '/' and '=' (and its URL form '%' escapes).
SECRET = "s3c>>>???~~~ /+x"
B64 = base64.b64encode(SECRET.encode()).decode()
FORMS = {
    "raw": SECRET,
    "base64": B64,
    "base64url": base64.urlsafe_b64encode(SECRET.encode()).decode(),
    "unpadded": B64.rstrip("="),
    "url": quote(SECRET, safe=""),
    "hex": SECRET.encode().hex(),
    "offset1": base64.b64encode(b"x" + SECRET.encode()).decode(),
}


def test_the_chosen_secret_exercises_the_awkward_characters() -> None:
    assert "+" in B64 and "/" in B64 and B64.endswith("=")
    assert "-" in FORMS["base64url"] and "_" in FORMS["base64url"]
    assert "%" in FORMS["url"]


def redactor() -> Redactor:
    r = Redactor()
    r.register("TOKEN", SECRET)
    return r


def stream(pieces: list[str], r: Redactor) -> str:
    s = StreamRedactor(r)
    return "".join(s.feed(p) for p in pieces) + s.flush()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_form_split_in_two_at_every_offset_is_redacted(form: str) -> None:
    r = redactor()
    text = f"before {FORMS[form]} after"
    whole = r.redact_text(text)
    assert "[secret:TOKEN]" in whole
    for cut in range(len(text) + 1):
        out = stream([text[:cut], text[cut:]], r)
        assert out == whole, (form, cut)


def test_a_form_fed_one_character_at_a_time_is_redacted() -> None:
    r = redactor()
    text = "a " + " b ".join(FORMS.values()) + " z"
    out = stream(list(text), r)
    assert out == r.redact_text(text)
    assert out.count("[secret:TOKEN]") == len(FORMS)
    assert SECRET not in out and B64 not in out


def test_three_pieces_at_every_pair_of_offsets() -> None:
    r = redactor()
    text = f"x{SECRET}y{B64}"
    whole = r.redact_text(text)
    for i, j in itertools.combinations(range(len(text) + 1), 2):
        assert stream([text[:i], text[i:j], text[j:]], r) == whole, (i, j)


def test_text_far_from_any_form_is_shown_at_once_and_only_a_tail_is_held() -> None:
    r = redactor()
    s = StreamRedactor(r)
    text = "plain text with no secret in it at all, long enough to pass the longest form " * 3
    shown = s.feed(text)
    longest = max(len(f) for f in secret_forms(SECRET))
    assert text.startswith(shown)
    assert len(text) - len(shown) == longest - 1
    assert shown + s.flush() == text
    assert s.flush() == ""


def test_a_secret_straddling_the_hold_boundary_is_shown_redacted_in_full() -> None:
    r = redactor()
    s = StreamRedactor(r)
    # The secret starts just before the hold boundary: it is complete, so it is shown now.
    longest = max(len(f) for f in secret_forms(SECRET))
    text = "p" * 40 + SECRET + "q" * (longest - len(SECRET))
    shown = s.feed(text)
    assert shown.startswith("p" * 40 + "[secret:TOKEN]")
    assert shown + s.flush() == r.redact_text(text)


def test_without_secrets_a_stream_passes_through_unheld() -> None:
    s = StreamRedactor(Redactor())
    assert s.feed("abc") == "abc"
    assert s.flush() == ""


def test_redact_head_of_a_short_text_holds_it_all() -> None:
    r = redactor()
    assert r.redact_head("tok>") == ("", "tok>")
    assert r.redact_head("") == ("", "")


def test_a_registration_is_forwarded_to_the_redactor_it_feeds() -> None:
    parent = Redactor()
    child = Redactor(forward_to=parent)
    child.register("FWD", "forwarded-value-1")
    assert parent.redact_text("x forwarded-value-1") == "x [secret:FWD]"
    assert child.redact_text("forwarded-value-1") == "[secret:FWD]"
    other = Redactor()
    other.register("LOCAL", "local-only-value")
    assert parent.redact_text("local-only-value") == "local-only-value"


def test_the_process_redactor_is_one_object() -> None:
    assert process_redactor() is process_redactor()


def test_every_value_in_one_piece_is_shown_redacted_at_once() -> None:
    r = redactor()
    s = StreamRedactor(r)
    tail = "t" * max(len(f) for f in secret_forms(SECRET))
    shown = s.feed(f"a {SECRET} b {B64} c {FORMS['hex']} d{tail}")
    assert shown.startswith("a [secret:TOKEN] b [secret:TOKEN] c [secret:TOKEN] d")
    assert SECRET not in shown + s.flush()


def test_a_longer_value_that_extends_a_shorter_one_is_not_cut_short_at_a_piece_boundary() -> None:
    # Y's hex is the longest form, and X's hex is its prefix: the piece ends one character before Y's
    # hex does, exactly where X's hex already matches. Only the next piece tells them apart.
    r = Redactor()
    short, long = "abcdefgh12", "abcdefgh12z"
    r.register("SHORT", short)
    r.register("LONG", long)
    form = long.encode().hex()
    assert max(len(f) for f in secret_forms(long)) == len(form)
    assert stream(["ppppp" + form[:-1], form[-1:] + " end"], r) == "ppppp[secret:LONG] end"
    assert stream(["ppppp" + form[:-2], form[-2:] + " end"], r) == "ppppp[secret:LONG] end"
    assert stream(["ppppp" + short.encode().hex(), "q end"], r) == "ppppp[secret:SHORT]q end"
