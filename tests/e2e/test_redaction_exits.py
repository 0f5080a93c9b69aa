"""Redaction wherever output leaves corral's memory (issue 14, item 3), through one real run.

Three secrets travel through it, each with encodings that hold '+', '/' and '=':
- the model key (ANTHROPIC_API_KEY on the host), which the scripted model echoes in its final text,
  as an upstream that reflects its key would;
- AGENT_TOKEN (`file:`, `expose = "agent"`), which the agent prints raw, as base64 at every
  alignment (standard and URL-safe), URL-encoded and as hex, and writes into its pull request's
  title and body and into a review comment through the gateway's forge tools;
- DEPLOY_KEY (`cmd:`, `to = ["checks"]`), which the checks print.
Then every exit is read as a person or a program would: the audit chain and spool and every other
file under corral's home (state DB, forge, logs), the exported cassette, and the CLI's output of
`corral show`, `corral runs`, `corral audit show`/`tail`/`export`."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml
from typer.testing import CliRunner

from corral.cli import app
from corral.forge.local import LocalForge
from corral.runs import RunOrchestrator, RunRequest
from corral.services import Services
from corral.settings import Settings
from tests.e2e.conftest import RunResult, make_repo, stored_run

pytestmark = pytest.mark.docker

MODEL_KEY = "sk-ant-c4n4ry>>>???~~~/+w"
AGENT_TOKEN = "ag3nt>>>???~~~ /+q"
DEPLOY_KEY = "dk>>>???~~~ /+r9"
SECRETS = {"ANTHROPIC_API_KEY": MODEL_KEY, "AGENT_TOKEN": AGENT_TOKEN, "DEPLOY_KEY": DEPLOY_KEY}


def forms(value: str) -> list[str]:
    """Every form a reader could decode the value from (the base64 ones at each alignment)."""
    raw = value.encode()
    out = [value, quote(value, safe=""), quote_plus(value, safe=""), raw.hex(), raw.hex().upper()]
    for pad in (b"", b"x", b"xy"):
        std = base64.b64encode(pad + raw).decode()
        out += [std, base64.urlsafe_b64encode(pad + raw).decode()]
    return out


def test_the_secrets_exercise_the_awkward_characters() -> None:
    for value in SECRETS.values():
        encoded = "".join(forms(value))
        assert "+" in encoded and "/" in encoded and "=" in encoded and "%" in encoded


PRINT_FORMS = """\
import base64, os, sys, urllib.parse
v = os.environ[sys.argv[1]].encode()
for pad in (b"", b"x", b"xy"):
    print(base64.b64encode(pad + v).decode())
    print(base64.urlsafe_b64encode(pad + v).decode())
print(v.decode())
print(urllib.parse.quote(v.decode(), safe=""))
print(urllib.parse.quote_plus(v.decode()))
print(v.hex())
"""

CONFIG = """\
[checks]
command = "python3 forms.py DEPLOY_KEY"

[secrets.AGENT_TOKEN]
ref = "file:{token_file}"
to = []
expose = "agent"

[secrets.DEPLOY_KEY]
ref = "cmd:cat {deploy_file}"
to = ["checks"]
"""


def _leaks(text: str) -> list[str]:
    return [f"{name}: {form}" for name, value in SECRETS.items() for form in forms(value) if form in text]


@pytest.fixture(scope="module")
def run(agent_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunResult, Path]]:
    with pytest.MonkeyPatch.context() as env:
        for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "CORRAL_TEAM"):
            env.delenv(name, raising=False)
        env.setenv("ANTHROPIC_API_KEY", MODEL_KEY)
        home = Path(tempfile.mkdtemp(prefix="cr", dir="/tmp"))
        env.setenv("CORRAL_HOME", str(home))
        base = tmp_path_factory.mktemp("redaction-exits")
        (base / "token").write_text(AGENT_TOKEN + "\n")
        (base / "deploy").write_text(DEPLOY_KEY)
        config = CONFIG.format(token_file=base / "token", deploy_file=base / "deploy")
        repo = make_repo(base / "repo", {"forms.py": PRINT_FORMS}, config)
        shown = "\n".join(forms(AGENT_TOKEN))
        turns = [
            {"tool_use": [{"name": "Bash", "input": {"command": "python3 forms.py AGENT_TOKEN"}}]},
            {
                "tool_use": [
                    {"name": "Write", "input": {"file_path": "{workspace}/notes.txt", "content": "n\n"}}
                ]
            },
            {
                "tool_use": [
                    {
                        "name": "mcp__corral__forge_open_pull_request",
                        "input": {"title": f"use {AGENT_TOKEN}", "body": f"the token:\n{shown}"},
                    }
                ]
            },
            {
                "tool_use": [
                    {"name": "mcp__corral__forge_comment", "input": {"number": 1, "body": f"again {shown}"}}
                ]
            },
            {"text": "done; the key was " + " ".join(forms(MODEL_KEY))},
        ]
        playbook = base / "playbook.yaml"
        playbook.write_text(yaml.safe_dump({"turns": turns}))
        settings = Settings(home=home)
        services = Services(settings)
        try:
            run_id = RunOrchestrator(services).run(RunRequest(task="tidy up", repo=repo, playbook=playbook))
        finally:
            services.close()
        yield stored_run(settings, run_id), base


def test_the_run_carried_every_secret_through_the_agent(run: tuple[RunResult, Path]) -> None:
    result, _ = run
    assert result.record.phase == "awaiting_approval", result.record.failure_reason
    (printed,) = [e.output for e in result.of("shell.command")]
    assert printed.count("[secret:AGENT_TOKEN]") == 10, printed
    (check,) = result.of("check.result")
    assert check.passed and check.output.count("[secret:DEPLOY_KEY]") == 10, check.output
    assert "[secret:ANTHROPIC_API_KEY]" in str((result.record.result or {}).get("text"))
    responses = " ".join(e.text for e in result.of("model.response"))
    assert responses.count("[secret:ANTHROPIC_API_KEY]") == len(forms(MODEL_KEY))


def test_no_file_corral_wrote_holds_any_form(run: tuple[RunResult, Path]) -> None:
    """The audit spool and store, the state DB, the forge, the gateway's logs: everything at rest."""
    result, _ = run
    files = [p for p in result.settings.home.rglob("*") if p.is_file()]
    assert any("spool" in p.parts for p in files)
    for path in files:
        leaks = _leaks(path.read_bytes().decode("utf-8", errors="replace"))
        assert not leaks, f"{path}: {leaks}"


def test_the_pull_request_and_its_comment_are_redacted(run: tuple[RunResult, Path]) -> None:
    result, _ = run
    (pr,) = LocalForge(result.settings.home / "forge").list()
    assert pr.author.startswith("agent:")
    assert pr.title == "use [secret:AGENT_TOKEN]"
    assert pr.body.count("[secret:AGENT_TOKEN]") == len(forms(AGENT_TOKEN))
    (comment,) = pr.comments
    assert comment.body.count("[secret:AGENT_TOKEN]") == len(forms(AGENT_TOKEN))
    assert not _leaks(pr.model_dump_json())


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "{run}"],
        ["show", "{run}", "--json"],
        ["runs", "--json"],
        ["audit", "show", "{run}"],
        ["audit", "show", "{run}", "--json"],
        ["audit", "tail", "{run}", "--no-follow", "--json"],
        ["audit", "export", "{run}"],
    ],
    ids=lambda argv: "-".join(a for a in argv if a != "{run}"),
)
def test_the_cli_shows_no_form(
    run: tuple[RunResult, Path], argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = run
    monkeypatch.setenv("CORRAL_HOME", str(result.settings.home))
    out = CliRunner().invoke(app, [a.format(run=result.run_id) for a in argv], terminal_width=400)
    assert out.exit_code == 0, out.output
    assert "[secret:" in out.output or argv == ["show", "{run}"]  # the summary shows no agent text
    assert not _leaks(out.output)


def test_the_exported_cassette_is_redacted(
    run: tuple[RunResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    result, base = run
    monkeypatch.setenv("CORRAL_HOME", str(result.settings.home))
    path = base / "run.cassette.json"
    out = CliRunner().invoke(app, ["audit", "export", result.run_id, "--cassette", str(path)])
    assert out.exit_code == 0, out.output
    text = path.read_text()
    assert not _leaks(text)
    cassette = json.loads(text)
    blocks = [b for x in cassette["exchanges"] for b in x["content"]]
    inputs = json.dumps([b.get("input") for b in blocks if b["type"] == "tool_use"])
    assert "use [secret:AGENT_TOKEN]" in inputs
    assert any("[secret:ANTHROPIC_API_KEY]" in b.get("text", "") for b in blocks)
    assert any("[secret:AGENT_TOKEN]" in r["output"] for r in cassette["tool_results"])
