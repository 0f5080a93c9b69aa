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


def test_absolute_or_escaping_protected_paths_are_refused() -> None:
    with pytest.raises(ConfigError, match="hidden_paths"):
        parse_config('[sandbox]\nhidden_paths = ["../etc"]\n', "corral.toml")
    with pytest.raises(ConfigError, match="readonly_paths"):
        parse_config('[sandbox]\nreadonly_paths = ["/etc"]\n', "corral.toml")


def test_secret_references_must_name_a_provider() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        parse_config('[secrets]\nDATABASE_URL = "postgres://u:p@h/db"\n', "corral.toml")
