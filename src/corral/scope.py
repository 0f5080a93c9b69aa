"""Which team (and which project config) a command acts in: one rule for every command.

The team is `--team`, then `CORRAL_TEAM`, then the corral.toml of the repository the command runs in
(or of `--repo`), then `"default"`. The repository is found by walking up from the directory to the
first one that holds `.git`, so a command run in a subdirectory of a repo uses that repo's corral.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.config import CONFIG_FILE, Config, load_config
from corral.settings import Settings

DEFAULT_TEAM = "default"


@dataclass(frozen=True)
class Scope:
    team: str
    source: str
    """Where the team came from, for messages: `--team`, `CORRAL_TEAM`, a corral.toml path, `default`."""
    config: Config | None = None
    """The repository's parsed corral.toml, when there is one (its stores apply too)."""
    config_path: Path | None = None

    def describe(self) -> str:
        return f"team {self.team!r} (from {self.source})"


def find_config(start: Path) -> Path | None:
    """The corral.toml of the git repository holding `start`, or in `start` itself."""
    here = start.expanduser().resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            return None
    return None


def resolve_scope(settings: Settings, team: str | None = None, repo: Path | None = None) -> Scope:
    """Apply the rule. A corral.toml that exists but is invalid is an error naming the file."""
    config_path = find_config(repo if repo is not None else Path.cwd())
    config = load_config(config_path.parent, config_path) if config_path is not None else None
    if team:
        return Scope(team, "--team", config, config_path)
    if settings.team:
        return Scope(settings.team, "CORRAL_TEAM", config, config_path)
    if config is not None and config_path is not None:
        return Scope(config.project.team, str(config_path), config, config_path)
    return Scope(DEFAULT_TEAM, "default", config, config_path)


def choose_team_hint(scope: Scope) -> str:
    return (
        f"searched {scope.describe()}; choose another with --team NAME or CORRAL_TEAM=NAME, "
        "or run the command inside the project's repository"
    )
