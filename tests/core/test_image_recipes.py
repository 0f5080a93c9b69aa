"""`[sandbox.image]` and `[team.image]`: the schema, the generated Dockerfile, the digest, `corral init`."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from corral.config import DEFAULT_IMAGE, ImageConfig, init_text, load_config, parse_config
from corral.detect import propose
from corral.errors import ConfigError
from corral.sandbox.project_image import ImageRecipe, read_inputs, repository_name

RECIPE = ImageRecipe(
    kind="project",
    name="shop",
    team="default",
    base="sha256:" + "a" * 64,
    claude_code="2.1.332",
    apt=("nodejs", "npm"),
    setup=("npm ci", "echo 'quoted \"step\"'"),
    inputs=(("package-lock.json", b"{}\n"), ("package.json", b"{}\n")),
    workdir="/workspace",
)


def test_a_string_image_still_names_a_ready_image() -> None:
    config = parse_config('[sandbox]\nimage = "acme/agent:1"\n', "corral.toml")
    assert config.sandbox.image_name == "acme/agent:1"
    assert parse_config("", "corral.toml").sandbox.image_name == DEFAULT_IMAGE


def test_a_sandbox_image_table_is_a_recipe() -> None:
    config = parse_config(
        '[sandbox.image]\napt = ["nodejs"]\nsetup = ["npm ci"]\ninputs = ["package-lock.json"]\n'
        '[team.image]\napt = ["git-lfs"]\n',
        "corral.toml",
    )
    assert config.sandbox.image_name is None
    assert config.sandbox.image == ImageConfig(apt=["nodejs"], setup=["npm ci"], inputs=["package-lock.json"])
    assert config.team.image == ImageConfig(apt=["git-lfs"])


def test_a_team_image_cannot_sit_under_another_named_image() -> None:
    with pytest.raises(ConfigError, match=r"\[team\.image\]"):
        parse_config('[sandbox]\nimage = "acme/agent:1"\n[team.image]\napt = ["git-lfs"]\n', "corral.toml")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('apt = ["nodejs; rm -rf /"]', "sandbox.image.apt"),
        ('inputs = ["../outside.lock"]', "sandbox.image.inputs"),
        ('inputs = ["/etc/passwd"]', "sandbox.image.inputs"),
        ('setup = ["  "]', "sandbox.image.setup"),
        ('run = ["x"]', "sandbox.image.run"),
    ],
)
def test_bad_recipes_name_the_key(body: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[sandbox.image]\n{body}\n", "corral.toml")
    assert named in caught.value.message and "corral.toml" in caught.value.message


def test_the_dockerfile_installs_apt_first_copies_inputs_then_runs_steps_as_uid_1000() -> None:
    lines = RECIPE.dockerfile().splitlines()

    def at(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    assert lines[at("FROM")] == f"FROM {RECIPE.base}"
    assert at("USER root") < at("RUN apt-get update") < at("USER 1000:1000") < at("COPY --chown=1000:1000")
    steps = [i for i, line in enumerate(lines) if line.startswith('RUN ["/bin/sh"')]
    assert len(steps) == 2 and steps[0] > at("COPY --chown=1000:1000")
    assert "USER root" not in lines[at("USER 1000:1000") :]
    assert '\\"step\\"' in lines[steps[1]]  # JSON keeps the step's own quoting intact
    assert "nodejs npm" in lines[at("RUN apt-get update")]
    assert f'io.corral.digest="{RECIPE.digest}"' in lines[-1]
    assert f'io.corral.inputs-hash="{RECIPE.inputs_hash}"' in lines[-1]
    assert RECIPE.tag == f"corral/project-shop:{RECIPE.digest}"


def test_the_digest_follows_inputs_steps_packages_and_base_and_the_inputs_hash_only_inputs() -> None:
    changed_input = replace(RECIPE, inputs=(("package-lock.json", b"{ }\n"), ("package.json", b"{}\n")))
    assert changed_input.digest != RECIPE.digest and changed_input.inputs_hash != RECIPE.inputs_hash
    for other in (
        replace(RECIPE, setup=("npm ci --ignore-scripts",)),
        replace(RECIPE, apt=("nodejs",)),
        replace(RECIPE, base="sha256:" + "b" * 64),
        replace(RECIPE, claude_code="2.1.333"),
        replace(RECIPE, team="other"),
    ):
        assert other.digest != RECIPE.digest and other.inputs_hash == RECIPE.inputs_hash
    assert replace(RECIPE).digest == RECIPE.digest


def test_repository_names_are_folded_for_docker() -> None:
    assert repository_name("project", "My Shop!") == "corral/project-my-shop"
    assert repository_name("team", "Payments") == "corral/team-payments"


def test_inputs_refuse_hidden_paths_links_directories_and_unmatched_patterns(tmp_path: Path) -> None:
    (tmp_path / "package-lock.json").write_text("{}")
    (tmp_path / "requirements-dev.txt").write_text("pretend\n")
    (tmp_path / "requirements.txt").write_text("attrs\n")
    (tmp_path / ".env").write_text("SECRET=1\n")
    (tmp_path / "sub").mkdir()
    os.symlink("/etc/hostname", tmp_path / "linked.lock")
    found = read_inputs(tmp_path, ["requirements*.txt", "package-lock.json"], [])
    assert [rel for rel, _ in found] == ["package-lock.json", "requirements-dev.txt", "requirements.txt"]
    for patterns, words in (
        ([".env"], "hidden path"),
        (["sub"], "not a regular file"),
        (["missing.lock"], "matches no file"),
    ):
        with pytest.raises(ConfigError, match=words):
            read_inputs(tmp_path, patterns, [".env"])
    with pytest.raises(ConfigError, match="symbolic link"):
        read_inputs(tmp_path, ["linked.lock"], [])


def test_init_proposes_an_image_and_checks_per_ecosystem(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["attrs"]\n'
        '[project.optional-dependencies]\ntest = ["pretend"]\n'
    )
    (tmp_path / "package.json").write_text("{}")
    (tmp_path / "package-lock.json").write_text("{}")
    (tmp_path / "go.mod").write_text("module x\n")
    (tmp_path / "Cargo.toml").write_text("[package]\nname = 'x'\n")
    proposal = propose(tmp_path)
    assert proposal.ecosystems == ["python", "node", "go", "rust"]
    assert proposal.inputs == ["pyproject.toml", "package.json", "package-lock.json", "go.mod", "Cargo.toml"]
    assert "npm ci" in proposal.setup and "go mod download" in proposal.setup
    assert (
        proposal.checks_command == "python3 -m pytest -q && npm test && go test ./... && cargo test --offline"
    )
    (tmp_path / "corral.toml").write_text(init_text("x", repo=tmp_path))
    config = load_config(tmp_path)
    assert isinstance(config.sandbox.image, ImageConfig)
    assert config.sandbox.image.apt == [
        "python3-venv",
        "nodejs",
        "npm",
        "golang-go",
        "ca-certificates",
        "cargo",
    ]
    assert config.checks.command == proposal.checks_command
    assert '["test"]' in config.sandbox.image.setup[1]  # the pyproject's test extra is installed


def test_init_without_a_lockfile_or_any_ecosystem_keeps_the_default_image(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{}")
    assert not propose(tmp_path).found
    assert "package-lock.json" in propose(tmp_path).notes[0]
    (tmp_path / "corral.toml").write_text(init_text("x", repo=tmp_path))
    assert load_config(tmp_path).sandbox.image_name == DEFAULT_IMAGE
