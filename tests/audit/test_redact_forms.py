"""Every encoded form of a secret is replaced whole, whatever characters its encodings use.

The secrets here are chosen so that their encodings are awkward: the base64 holds `+`, `/` and `=`
(so the standard and URL-safe alphabets differ, and padding matters), and the URL-encoded forms hold
spaces, slashes and plus signs (so `quote`, `quote_plus` and `quote(safe="")` all differ).
"""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

import pytest

from corral.audit.redact import MIN_SECRET_LENGTH, Redactor
from corral.errors import ConfigError

B64_SECRET = "pa~~w>rd?!x"  # base64 cGF+fnc+cmQ/IXg= ; every 3-byte alignment has a + or a /
URL_SECRET = "open sesame/42+x"


def redactor(**secrets: str) -> Redactor:
    r = Redactor()
    for name, value in secrets.items():
        r.register(name, value)
    return r


def b64_forms(secret: str) -> dict[str, str]:
    std = base64.b64encode(secret.encode()).decode()
    url = base64.urlsafe_b64encode(secret.encode()).decode()
    return {"std": std, "std-nopad": std.rstrip("="), "url": url, "url-nopad": url.rstrip("=")}


def test_the_test_secret_really_has_awkward_encodings() -> None:
    forms = b64_forms(B64_SECRET)
    assert "+" in forms["std"] and "/" in forms["std"] and forms["std"].endswith("=")
    assert forms["std"] != forms["url"] and "-" in forms["url"] and "_" in forms["url"]
    assert len({quote(URL_SECRET), quote(URL_SECRET, safe=""), quote_plus(URL_SECRET)}) == 3


@pytest.mark.parametrize("form", list(b64_forms(B64_SECRET)))
@pytest.mark.parametrize("around", [("before ", " after"), ("", ""), ("x", "y"), ('{"v":"', '"}')])
def test_each_base64_form_is_replaced_whole(form: str, around: tuple[str, str]) -> None:
    encoded = b64_forms(B64_SECRET)[form]
    out = redactor(K=B64_SECRET).redact_text(f"{around[0]}{encoded}{around[1]}")
    assert out == f"{around[0]}[secret:K]{around[1]}"


@pytest.mark.parametrize(
    "encoded",
    [
        URL_SECRET,
        quote(URL_SECRET, safe=""),  # open%20sesame%2F42%2Bx
        quote(URL_SECRET, safe="").lower(),
        quote(URL_SECRET),  # open%20sesame/42%2Bx
        quote(URL_SECRET).lower(),
        quote_plus(URL_SECRET),  # open+sesame%2F42%2Bx
        quote_plus(URL_SECRET).lower(),
    ],
)
def test_each_url_encoded_form_is_replaced_whole(encoded: str) -> None:
    assert redactor(K=URL_SECRET).redact_text(f"GET /?t={encoded}&x=1") == "GET /?t=[secret:K]&x=1"


def embedded(secret: str, offset: int, encode: object) -> str:
    """The secret inside a larger file that was base64-encoded as a whole (`base64 .env`)."""
    blob = b"K" * offset + b"API_TOKEN=" + secret.encode() + b"\nDEBUG=1\n"
    return encode(blob).decode()  # type: ignore[operator, no-any-return]


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(base64.b64encode, base64.b64decode), (base64.urlsafe_b64encode, base64.urlsafe_b64decode)],
    ids=["standard", "url-safe"],
)
@pytest.mark.parametrize(
    ("secret", "offset"),
    # The value starts at byte offset+10. A short value is found at the alignments where a whole
    # 3-byte group run of it encodes to at least 8 characters: 6 bytes need alignment 0, 7 bytes 0 or 2.
    [*((B64_SECRET, k) for k in range(3)), (">?~>?~", 2), (">?~>?~>", 1), (">?~>?~>", 2)]
    + [(">?~>?~>?", k) for k in range(3)],
)
def test_secret_inside_a_larger_blob_in_either_alphabet(
    encode: object, decode: object, secret: str, offset: int
) -> None:
    out = redactor(K=secret).redact_text(embedded(secret, offset, encode))
    assert out.count("[secret:K]") == 1
    leftover = out.replace("[secret:K]", "")
    for piece in (leftover, leftover[: len(leftover) // 4 * 4]):
        decoded = decode(piece + "=" * (-len(piece) % 4))  # type: ignore[operator]
        assert secret[2:-2].encode() not in decoded


@pytest.mark.parametrize("secret", [">?~>?~", ">?~>?~>", "123456", "abcdefg"])
def test_the_shortest_secrets_are_redacted_in_every_form(secret: str) -> None:
    assert len(secret) >= MIN_SECRET_LENGTH
    r = redactor(K=secret)
    for encoded in (secret, *b64_forms(secret).values()):
        assert r.redact_text(f"<{encoded}>") == "<[secret:K]>", encoded


def test_length_and_name_limits_are_exact() -> None:
    r = Redactor()
    r.register("SIX", "x" * MIN_SECRET_LENGTH)
    r.register("N" * 64, "y" * 20)
    with pytest.raises(ConfigError) as err:
        r.register("PORT", "5" * (MIN_SECRET_LENGTH - 1))
    assert str(err.value) == (
        "secret 'PORT' is 5 characters long, too short to redact safely\n"
        "  hint: secret values must be at least 6 characters; "
        "a shorter one would redact unrelated text everywhere in the audit log"
    )
    for bad in ("N" * 65, "bad name!", "", "a/b"):
        with pytest.raises(ConfigError) as err:
            r.register(bad, "z" * 20)
        assert str(err.value) == (
            f"secret name {bad!r} cannot be used as a redaction label\n"
            "  hint: use letters, digits, '_', '.', ':' or '-' (at most 64 characters)"
        )
    assert r.redact_text("xxxxxx yyyyyyyyyyyyyyyyyyyy") == f"[secret:SIX] [secret:{'N' * 64}]"


def test_a_longer_secret_wins_over_a_shorter_one_inside_it() -> None:
    r = redactor(SHORT="tok-12345", LONG="tok-1234567890")
    assert r.redact_text("a tok-1234567890 b tok-12345 c") == "a [secret:LONG] b [secret:SHORT] c"
    long_b64 = base64.b64encode(b"tok-1234567890").decode()
    assert r.redact_text(f"<{long_b64}>") == "<[secret:LONG]>"
    # Registered in the other order, the result is the same: length decides, not registration.
    r = redactor(LONG="tok-1234567890", SHORT="tok-12345")
    assert r.redact_text("tok-1234567890") == "[secret:LONG]"


def test_the_first_name_registered_for_a_value_keeps_it() -> None:
    r = redactor(FIRST=B64_SECRET, SECOND=B64_SECRET)
    assert r.redact_text(B64_SECRET) == "[secret:FIRST]"


def test_text_that_is_not_the_secret_stays_readable() -> None:
    r = redactor(K=B64_SECRET)
    # base64 of another value that shares the secret's tail is not the secret's encoding
    tail = base64.b64encode(B64_SECRET[3:].encode()).decode()
    assert r.redact_text(tail) == tail
    assert r.redact_text("pa~~w>rd?") == "pa~~w>rd?"


def test_walk_keeps_structure_and_non_string_keys() -> None:
    r = redactor(K=B64_SECRET)
    assert not Redactor().active and r.active
    payload = {1: B64_SECRET, None: [B64_SECRET, (B64_SECRET, 2)], B64_SECRET: {"n": 1.5, "b": False}}
    assert r.redact(payload) == {
        1: "[secret:K]",
        None: ["[secret:K]", ["[secret:K]", 2]],
        "[secret:K]": {"n": 1.5, "b": False},
    }
    assert r.redact(B64_SECRET) == "[secret:K]"
    assert r.redact(7) == 7
