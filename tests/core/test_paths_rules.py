"""What a protected-path pattern refusal says, and files versus directories through every entry point."""

from __future__ import annotations

import pytest

from corral.paths import PathRules, Protection, literal, pattern_problem


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "is empty"),
        (" a", "has leading or trailing whitespace"),
        ("!keep", "is a negation ('!'), which corral does not support in protected paths"),
        ("#x", "starts with '#', which .gitignore reads as a comment (write '\\#' for a literal '#')"),
        ("a/../b", "contains '..'"),
        ("/", "names the whole workspace"),
        ("**", "names the whole workspace"),
    ],
)
def test_a_refused_pattern_says_exactly_why(pattern: str, problem: str) -> None:
    assert pattern_problem(pattern) == problem
    with pytest.raises(ValueError) as err:
        PathRules([pattern])
    assert str(err.value) == f"paths: pattern {pattern!r} {problem}"


@pytest.mark.parametrize("pattern", ["X", "X/", "/X", "dir/X"])
def test_names_ending_in_any_letter_are_ordinary_patterns(pattern: str) -> None:
    assert pattern_problem(pattern) is None
    assert PathRules([pattern]).matches("X" if pattern != "dir/X" else "dir/X", is_dir=True)


def test_literal_keeps_every_character_of_the_name() -> None:
    assert literal("dir/X") == "/dir/X"
    assert literal("/XrootX/") == "/XrootX"
    assert PathRules([literal("BOX")]).matches("BOX")


def test_a_directory_only_pattern_protects_the_directory_not_a_file_of_that_name() -> None:
    rules = PathRules(["secrets/"])
    assert rules.matches("secrets", is_dir=True) and not rules.matches("secrets")
    protection = Protection.of(readonly=["build/"], hidden=["secrets/"])
    assert protection.kind("secrets", is_dir=True) == "hidden"
    assert protection.kind("build", is_dir=True) == "readonly"
    assert protection.kind("secrets") is None and protection.kind("build") is None
    assert protection.covers("secrets", is_dir=True) and not protection.covers("secrets")
