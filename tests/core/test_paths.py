"""corral.paths, the one matcher of protected paths that the mounts, hooks and commit check share."""

from __future__ import annotations

import pytest

from corral.config import parse_config
from corral.paths import (
    PathRules,
    Protection,
    ancestors,
    control_files,
    literal,
    normalize,
    outermost,
    pattern_problem,
)


def matches(pattern: str, path: str, *, is_dir: bool = False) -> bool:
    return PathRules([pattern]).matches(path, is_dir=is_dir)


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        # No slash: any depth.
        ("*.pem", "root.pem"),
        ("*.pem", "certs/server.pem"),
        ("*.pem", "a/b/c/deep.pem"),
        (".env", ".env"),
        (".env", "services/api/.env"),
        ("secret.env", "config/secret.env"),
        # A matched directory covers everything below it.
        ("*.pem", "bundle.pem/inner.txt"),
        ("certs/*", "certs/sub/deep/key"),
        ("secrets", "secrets/prod/key"),
        ("secrets", "x/secrets/key"),
        # An inner or leading slash anchors at the root.
        ("config/secret.env", "config/secret.env"),
        ("/.env", ".env"),
        ("/config", "config/app.toml"),
        # `*` and `?` within one segment.
        ("certs/*.pem", "certs/a.pem"),
        ("a?c", "abc"),
        ("[ab].txt", "a.txt"),
        ("[!ab].txt", "c.txt"),
        # `**` crosses directories.
        ("a/**/b.txt", "a/b.txt"),
        ("a/**/b.txt", "a/x/b.txt"),
        ("a/**/b.txt", "a/x/y/z/b.txt"),
        ("**/b.txt", "b.txt"),
        ("**/b.txt", "x/y/b.txt"),
        ("billing/**", "billing/rates.py"),
        ("billing/**", "billing/sub/deep.py"),
        ("**/cache/**", "x/cache/y"),
        # Escapes are literal characters.
        ("\\#notes", "#notes"),
        ("\\!bang", "!bang"),
        ("a\\*b", "a*b"),
    ],
)
def test_a_pattern_matches(pattern: str, path: str) -> None:
    assert matches(pattern, path)


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("*.pem", "root.pem.txt"),
        ("*.pem", "pem"),
        ("*.pem", "certs/pem/readme"),
        (".env", ".envrc"),
        (".env", "src/.envrc"),
        ("config/secret.env", "other/config/secret.env"),
        ("config/secret.env", "config/secret.env.bak"),
        ("/.env", "sub/.env"),
        ("certs/*.pem", "certs/sub/a.pem"),  # `*` does not cross `/`
        ("certs/*.pem", "other/certs/a.pem"),
        ("a?c", "a/c"),
        ("a?c", "abbc"),
        ("[ab].txt", "c.txt"),
        ("[!ab].txt", "a.txt"),
        ("a/**/b.txt", "c/a/x/b.txt"),
        ("a/**/b.txt", "a/x/b.txt.orig"),
        ("billing/**", "billingx/rates.py"),
        ("billing/**", "x/billing/rates.py"),
        ("billing/**", "billing.py"),
        ("*.PEM", "a.pem"),  # case matters, as on the host's filesystem
        ("a\\*b", "axb"),
        ("secrets/", "secrets"),  # a trailing slash names directories only
        ("secrets/", "secretsx/k"),
    ],
)
def test_a_pattern_does_not_match(pattern: str, path: str) -> None:
    assert not matches(pattern, path)


def test_a_trailing_slash_or_double_star_names_the_directory_itself() -> None:
    assert matches("secrets/", "secrets", is_dir=True)
    assert matches("secrets/", "deep/secrets", is_dir=True)
    assert matches("secrets/", "secrets/k")
    assert matches("billing/**", "billing", is_dir=True)
    assert not matches("billing/**", "billing")  # a file named billing is not the directory
    assert not matches("billing/**", "x/billing", is_dir=True)  # `billing/**` is anchored
    assert matches("a/b/**", "a/b", is_dir=True)
    assert not matches("a/b/**", "a", is_dir=True)
    assert matches("**/cache/**", "cache", is_dir=True)
    assert matches("**/cache/**", "x/y/cache", is_dir=True)


def test_paths_are_normalised_before_matching() -> None:
    rules = PathRules(["config/secret.env"])
    for path in ("config/secret.env", "./config/secret.env", "/config/secret.env", "config//secret.env"):
        assert rules.matches(path), path
    assert not rules.matches("")
    assert not rules.matches(".")
    assert not rules.matches("/")
    assert normalize("./a//b/./c/") == "a/b/c"
    assert normalize("") == ""


def test_empty_rules_match_nothing_and_are_falsy() -> None:
    rules = PathRules([])
    assert not rules
    assert not rules.matches("anything")
    assert not rules.matches("anything", is_dir=True)
    assert PathRules(["x"])


def test_several_patterns_match_if_any_does_and_select_keeps_order() -> None:
    rules = PathRules(["*.pem", "secrets/**"], "hidden_paths")
    assert rules.patterns == ("*.pem", "secrets/**")
    assert rules.key == "hidden_paths"
    paths = ["b.pem", "app.py", "secrets/k", "a/c.pem", "secretsy"]
    assert rules.select(paths) == ["b.pem", "secrets/k", "a/c.pem"]
    assert "hidden_paths" in repr(rules) and "*.pem" in repr(rules)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (" x", "whitespace"),
        ("x ", "whitespace"),
        ("!keep.env", "negation"),
        ("#comment", "comment"),
        ("../etc", "'..'"),
        ("a/../../b", "'..'"),
        ("**", "whole workspace"),
        ("*", "whole workspace"),
        ("/**", "whole workspace"),
        ("**/*", "whole workspace"),
        ("?*", "whole workspace"),
        ("/", "whole workspace"),
        ("//", "whole workspace"),
        ("x\\", "not a valid pattern"),
    ],
)
def test_meaningless_or_dangerous_patterns_are_refused(pattern: str, problem: str) -> None:
    found = pattern_problem(pattern)
    assert found is not None and problem in found
    with pytest.raises(ValueError, match="hidden_paths: pattern"):
        PathRules([pattern], "hidden_paths")


ORDINARY = ["*.pem", "/etc", "a/", "\\#x", "*.*", "?", "**/x", "x/**", "..x", "a..b"]


@pytest.mark.parametrize("pattern", ORDINARY)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert pattern_problem(pattern) is None


def test_literal_names_exactly_one_root_path() -> None:
    odd = "conf/gw[1]*?.toml"
    rules = PathRules([literal(odd)])
    assert rules.matches(odd)
    assert not rules.matches("conf/gw1x.toml")
    assert not rules.matches("conf/gw[1]ab.toml")
    assert not rules.matches("sub/" + odd)
    assert literal("corral.toml") == "/corral.toml"
    assert literal("/a\\b/") == "/a\\\\b"
    assert PathRules([literal("a\\b")]).matches("a\\b")
    assert PathRules([literal("a]b")]).matches("a]b")
    assert PathRules([literal("[ab]")]).matches("[ab]")
    assert not PathRules([literal("[ab]")]).matches("a")


def test_hidden_wins_over_readonly() -> None:
    protection = Protection.of(readonly=["conf/**"], hidden=["*.env"])
    assert protection.kind("conf/priv.env") == "hidden"
    assert protection.kind("conf/pub.yaml") == "readonly"
    assert protection.kind("conf", is_dir=True) == "readonly"
    assert protection.kind("app.py") is None
    assert protection.covers("x/.env") and protection.covers("conf/a")
    assert not protection.covers("app.py")
    assert protection.readonly.key == "readonly_paths" and protection.hidden.key == "hidden_paths"


def test_control_files_are_read_only_unless_the_config_says_otherwise() -> None:
    config = parse_config('[sandbox]\nreadonly_paths = ["billing/**"]\nhidden_paths = [".env"]\n', "c")
    protection = Protection.from_config(config)
    assert protection.readonly.patterns == ("billing/**", "/corral.toml", "/corral-gateway.toml")
    assert protection.hidden.patterns == (".env",)
    assert protection.kind("corral.toml") == "readonly"
    assert protection.kind("corral-gateway.toml") == "readonly"
    assert protection.kind("sub/corral.toml") is None  # only the repository's own
    opted_out = parse_config("[sandbox]\nagent_may_edit_config = true\n", "c")
    assert Protection.from_config(opted_out).kind("corral.toml") is None
    assert not Protection.from_config(opted_out).readonly


@pytest.mark.parametrize(
    ("upstreams_file", "expected"),
    [
        ("ops/gateway.toml", ["corral.toml", "ops/gateway.toml"]),
        ("./ops//gw.toml", ["corral.toml", "ops/gw.toml"]),
        ("/etc/corral/gateway.toml", ["corral.toml"]),  # outside the repository: nothing to mount
        ("../shared/gateway.toml", ["corral.toml"]),
        (".", ["corral.toml"]),
    ],
)
def test_the_gateway_file_is_protected_where_it_lives_in_the_repository(
    upstreams_file: str, expected: list[str]
) -> None:
    config = parse_config(f'[gateway]\nupstreams_file = "{upstreams_file}"\n', "c")
    assert control_files(config) == expected


def test_outermost_drops_nested_paths_and_ancestors_list_the_parents() -> None:
    assert outermost(["a/b", "a", "ab", "c/d", "c/d/e", "a/b/c"]) == ["a", "ab", "c/d"]
    assert outermost([]) == []
    assert ancestors("a/b/c.txt") == ["a", "a/b"]
    assert ancestors("top.txt") == []
    assert ancestors("./a/b/") == ["a"]
