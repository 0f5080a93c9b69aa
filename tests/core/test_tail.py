"""corral/tail.py: the bounded tail that sandbox output is streamed into (issue 9, output). Whatever is
pushed, it holds the newest `limit` bytes exactly, never more, and counts every byte it let go.
tests/sandbox/test_in_container.py streams 1.2 GB of real exec output through one."""

from __future__ import annotations

import random

import pytest

from corral.tail import Tail


@pytest.mark.parametrize("limit", [0, -1])
def test_a_tail_needs_a_positive_limit(limit: int) -> None:
    with pytest.raises(ValueError, match=f"^a tail needs a positive limit, not {limit}$"):
        Tail(limit)


def test_an_empty_tail_holds_nothing() -> None:
    tail = Tail(1)
    assert (tail.limit, tail.dropped, len(tail), tail.data()) == (1, 0, 0, b"")
    assert (tail.text(), tail.lines()) == ("", [])


@pytest.mark.parametrize(
    ("chunks", "kept"),
    [
        ([b"abc", b"", b"defg"], b"abcdefg"),  # under the limit
        ([b"abcdefghij"], b"abcdefghij"),  # one chunk exactly at it
        ([b"abcde", b"fghij"], b"abcdefghij"),  # two chunks that fill it exactly
    ],
)
def test_output_up_to_the_limit_is_kept_whole(chunks: list[bytes], kept: bytes) -> None:
    tail = Tail(10)
    for chunk in chunks:
        tail.push(chunk)
    assert (tail.data(), len(tail), tail.dropped) == (kept, len(kept), 0)


def test_one_chunk_over_the_limit_keeps_only_its_end() -> None:
    tail = Tail(4)
    tail.push(b"xy")
    tail.push(b"0123456789")
    assert (tail.data(), len(tail), tail.dropped) == (b"6789", 4, 8)
    # A chunk exactly the size of the limit replaces everything held before it.
    tail.push(b"WXYZ")
    assert (tail.data(), len(tail), tail.dropped) == (b"WXYZ", 4, 12)


def test_small_chunks_past_the_limit_drop_the_oldest_bytes_first() -> None:
    tail = Tail(5)
    tail.push(b"abc")
    tail.push(b"de")
    tail.push(b"f")  # drops the first byte of the oldest chunk
    assert (tail.data(), tail.dropped) == (b"bcdef", 1)
    tail.push(b"gh")  # drops the rest of it exactly
    assert (tail.data(), tail.dropped) == (b"defgh", 3)
    tail.push(b"ijkl")  # drops a whole chunk and part of the next
    assert (tail.data(), tail.dropped) == (b"hijkl", 7)
    assert len(tail) == 5


def test_a_pushed_bytearray_is_copied_not_kept() -> None:
    tail = Tail(8)
    buffer = bytearray(b"abc")
    tail.push(buffer)
    buffer[:] = b"XYZ"
    assert tail.data() == b"abc"
    big = bytearray(b"0123456789")
    tail.push(big)
    big[:] = b"!!!!!!!!!!"
    assert tail.data() == b"23456789"


def test_any_stream_of_chunks_keeps_exactly_its_last_bytes() -> None:
    rng = random.Random(18)
    for limit in (1, 2, 3, 7, 64):
        tail = Tail(limit)
        sent = b""
        for _ in range(200):
            sizes = [0, 1, 2, limit - 1, limit, limit + 1, rng.randrange(3 * limit)]
            chunk = rng.randbytes(rng.choice(sizes))
            tail.push(chunk)
            sent += chunk
            kept = sent[-limit:] if sent else b""
            assert tail.data() == kept
            assert len(tail) == len(kept) <= limit
            assert tail.dropped == len(sent) - len(kept)


def test_lines_are_pushed_with_their_newline() -> None:
    tail = Tail(100)
    tail.push_line("first")
    tail.push_line("")
    tail.push_line("läst")
    assert tail.data() == b"first\n\nl\xc3\xa4st\n"
    assert tail.lines() == ["first", "", "läst"]


def test_a_line_that_is_not_valid_text_is_still_kept() -> None:
    tail = Tail(100)
    tail.push_line("bad \udcff byte")  # a lone surrogate, as a decoder with surrogateescape leaves it
    assert tail.data() == b"bad ? byte\n"


def test_a_character_cut_in_two_becomes_a_replacement_character() -> None:
    tail = Tail(3)
    tail.push("aé€".encode())  # 1 + 2 + 3 bytes: the tail keeps only the euro sign's 3 bytes
    assert tail.text() == "€"
    tail.push(b"\xa4z")  # the euro sign's last byte and "z": the tail starts mid-character
    assert tail.text() == "\ufffd\ufffdz"
    assert tail.lines() == ["\ufffd\ufffdz"]
