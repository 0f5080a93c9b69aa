"""`corral prefs` through the CLI runner, against the same store the library uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.prefs import app
from corral.errors import StoreError


@pytest.fixture
def repo(tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORRAL_STATE_URL", state_url)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "corral.toml").write_text('[project]\nname = "shop"\nteam = "team-cli"\n')
    return repo


def _ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_prefs_add_list_supersede_retire_match(repo: Path) -> None:
    args = ["add", "Use Decimal for invoice money.", "--glob", "billing/**", "--by", "alice", "--json"]
    added = json.loads(_ok(*args, "--repo", str(repo)))
    assert (added["project"], added["scope_glob"], added["created_by"]) == ("shop", "billing/**", "alice")
    _ok("add", "Commit messages are imperative.", "--repo", str(repo))
    listed = json.loads(_ok("list", "--repo", str(repo), "--json"))
    assert [p["rule"] for p in listed] == [
        "Use Decimal for invoice money.",
        "Commit messages are imperative.",
    ]
    assert "Use Decimal" in _ok("list", "--repo", str(repo))

    section = _ok("match", "fix invoice money rounding in billing/tax.py", "--repo", str(repo))
    assert "## Team preferences (corral)" in section and f"[pref {added['id']}]" in section

    new = json.loads(
        _ok("supersede", str(added["id"]), "Use Decimal, rounded half-up.", "--repo", str(repo), "--json")
    )
    assert new["scope_glob"] == "billing/**"
    retired = json.loads(_ok("retire", str(new["id"]), "--repo", str(repo), "--json"))
    assert retired["retired_at"] is not None
    active = json.loads(_ok("list", "--repo", str(repo), "--json"))
    assert [p["rule"] for p in active] == ["Commit messages are imperative."]
    everything = json.loads(_ok("list", "--repo", str(repo), "--all", "--json"))
    assert len(everything) == 3
    assert "no preference matches" in _ok("match", "invoice money", "--repo", str(repo))


def test_retiring_twice_is_a_clear_error(repo: Path) -> None:
    added = json.loads(_ok("add", "A rule.", "--repo", str(repo), "--json"))
    _ok("retire", str(added["id"]), "--repo", str(repo))
    result = CliRunner().invoke(app, ["retire", str(added["id"]), "--repo", str(repo)])
    assert isinstance(result.exception, StoreError)
    assert "already retired" in str(result.exception)
