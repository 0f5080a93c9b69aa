"""Run ids: short, URL- and branch-safe, unique, and sortable by creation time."""

from __future__ import annotations

import re
import secrets
import time

# Crockford's base32 alphabet in lower case is in ASCII order, so ids sort by the time they encode.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_TIME_CHARS = 7  # 35 bits of seconds since the epoch: good until the year 3058
_RANDOM_CHARS = 6  # 30 random bits: even 1000 runs in one second collide with p < 0.05%
RUN_ID = re.compile(r"^r[0-9a-hjkmnp-tv-z]{13}$")
RUN_ID_PREFIX = re.compile(r"^r?[0-9a-z]*$")


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def new_run_id(now: float | None = None) -> str:
    """`r` + 7 chars of time + 6 random chars, e.g. `r1ngjv22w8tmkq`."""
    seconds = int(time.time() if now is None else now)
    return "r" + _encode(seconds, _TIME_CHARS) + _encode(secrets.randbits(5 * _RANDOM_CHARS), _RANDOM_CHARS)
