"""`corral.display`: what an agent wrote is shown as text, never obeyed by the terminal."""

from __future__ import annotations

import json

import pytest

from corral.display import json_line, json_text, visible, visible_line


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),
        ("a\rb", "a\\x0db"),
        ("\x00\x08\x0b\x0c\x7f", "\\x00\\x08\\x0b\\x0c\\x7f"),
        ("\u009b31m", "\\x9b31m"),
        ("\u0085", "\\x85"),
        ("abc\u202edef", "abc\\u202edef"),
        ("\u2066\u2069\u200b\ufeff\u061c", "\\u2066\\u2069\\u200b\\ufeff\\u061c"),
    ],
)
def test_controls_and_invisible_format_characters_become_visible(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_ordinary_text_newlines_tabs_and_unicode_are_left_alone() -> None:
    text = "ok\n\tindented — naïve 日本語 \\x1b stays four characters"
    assert visible(text) == text


def test_one_line_fields_show_newlines_and_tabs_too() -> None:
    assert visible_line("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"


def test_json_output_stays_valid_json_with_the_same_values() -> None:
    data = {"out": "\x1b[31mred\u009b\u202e\r", "name": "naïve"}
    text = json_text(data)
    assert json.loads(text) == data
    for raw in ("\x1b", "\u009b", "\u202e", "\r"):
        assert raw not in text
    assert "naïve" in text  # ensure_ascii=False still keeps readable text readable
    line = json.dumps(data, ensure_ascii=False)
    assert "\u009b" in line  # what json.dumps alone leaves raw...
    assert (
        "\u009b" not in json_line(line) and json.loads(json_line(line)) == data
    )  # ...and json_line does not
