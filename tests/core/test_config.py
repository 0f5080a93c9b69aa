from pathlib import Path

import pytest

from corral.config import Config, init_text, load_config, parse_config
from corral.errors import ConfigError


def test_init_template_parses_to_the_defaults() -> None:
    defaults = Config(project={"name": "shop"})  # type: ignore[arg-type]
    assert parse_config(init_text("shop"), "corral.toml").model_dump() == defaults.model_dump()


def test_unknown_key_is_named_with_its_section_and_file() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[sandbox]\nimage = 'x'\nnetwork = 'host'\n", "/repo/corral.toml")
    assert "/repo/corral.toml" in info.value.message
    assert "unknown key 'sandbox.network'" in info.value.message


def test_model_alias_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[agent]\nmodel = "claude-sonnet-4-5"\n', "corral.toml")
    assert "agent.model" in info.value.message
    assert "dated model id" in info.value.message


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text("[project\nname = 1")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path / "corral.toml") in info.value.message
    assert "not valid TOML" in info.value.message


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path, tmp_path / "nope.toml")


def test_escaping_or_meaningless_protected_paths_are_refused() -> None:
    with pytest.raises(ConfigError, match="hidden_paths"):
        parse_config('[sandbox]\nhidden_paths = ["../etc"]\n', "corral.toml")
    refused = (("!keep.env", "negation"), ("#x", "comment"), ("**", "whole workspace"), ("", "empty"))
    for pattern, why in refused:
        with pytest.raises(ConfigError, match=f"readonly_paths.*{why}"):
            parse_config(f'[sandbox]\nreadonly_paths = ["{pattern}"]\n', "corral.toml")


def test_a_leading_slash_anchors_a_pattern_at_the_repository_root_as_in_gitignore() -> None:
    config = parse_config('[sandbox]\nreadonly_paths = ["/etc"]\n', "corral.toml")
    assert config.sandbox.readonly_paths == ["/etc"]


def test_limits_have_defaults_and_refuse_nonsense() -> None:
    limits = parse_config("", "corral.toml").limits
    assert (limits.max_file_mb, limits.max_diff_mb, limits.max_files) == (10, 100, 5000)
    with pytest.raises(ConfigError, match=r"limits\.max_files"):
        parse_config("[limits]\nmax_files = 0\n", "corral.toml")
    with pytest.raises(ConfigError, match=r"limits\.max_file_mb"):
        parse_config("[limits]\nmax_file_mb = -1\n", "corral.toml")


def test_the_init_template_shows_every_new_key_with_its_default() -> None:
    text = init_text("shop")
    config = parse_config(text, "corral.toml")
    assert config.limits == parse_config("", "corral.toml").limits
    assert config.sandbox.agent_may_edit_config is False
    assert "agent_may_edit_config = false" in text and "max_file_mb = 10" in text


def test_secret_references_must_name_a_provider() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        parse_config('[secrets]\nDATABASE_URL = "postgres://u:p@h/db"\n', "corral.toml")


def test_sandbox_runtime_is_runc_or_runsc_and_the_environment_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from corral.sandbox import docker_runtime, resolve_runtime

    assert Config().sandbox.runtime == "runc"
    assert parse_config('[sandbox]\nruntime = "runsc"\n', "corral.toml").sandbox.runtime == "runsc"
    with pytest.raises(ConfigError, match=r"sandbox\.runtime"):
        parse_config('[sandbox]\nruntime = "kata"\n', "corral.toml")
    monkeypatch.delenv("CORRAL_SANDBOX_RUNTIME", raising=False)
    assert resolve_runtime("runsc") == "runsc"
    # ... and runs under the gVisor corral builds, not Debian's `runsc` (docs/security.md).
    assert docker_runtime("runsc") == "runsc-corral" and docker_runtime("runc") == "runc"
    monkeypatch.setenv("CORRAL_SANDBOX_RUNTIME", "runc")
    assert resolve_runtime("runsc") == "runc"
    monkeypatch.setenv("CORRAL_SANDBOX_RUNTIME", "kata")
    with pytest.raises(ConfigError, match="CORRAL_SANDBOX_RUNTIME='kata'"):
        resolve_runtime("runc")
