"""`corral audit` through the CLI runner: show, tail, verify (store and --file), export, runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from corral.audit.log import AuditLog
from corral.cli.audit import app
from corral.events import (
    CheckResult,
    FileEdit,
    ModelRequest,
    ModelResponse,
    PrOpened,
    RunFinished,
    ShellCommand,
    ToolUseBlock,
)
from corral.settings import Settings

runner = CliRunner()
MODEL = "claude-sonnet-4-5-20250929"


def demo_run(settings: Settings) -> list[str]:
    """A small run: returns the commands and edited paths, in order."""
    with AuditLog.open(settings, background=False) as log:
        rec = log.for_run("run-demo")
        rec.emit(
            ModelRequest(
                request_model=MODEL, exchange_id="x1", messages=1, tools=5, last_user="add a health endpoint"
            )
        )
        rec.emit(
            ModelResponse(
                request_model=MODEL,
                exchange_id="x1",
                stop_reason="tool_use",
                tool_uses=[ToolUseBlock(id="t1", name="Bash", input={"command": "ls"})],
            )
        )
        rec.emit(
            ShellCommand(tool_call_id="t1", command="ls -la", exit_code=0, output="app.py"), durable=True
        )
        rec.emit(
            FileEdit(
                tool_call_id="t2", path="app.py", diff="--- a/app.py\n+++ b/app.py\n+def health(): ...\n"
            )
        )
        rec.emit(ShellCommand(tool_call_id="t3", command="pytest -q", exit_code=1, output="1 failed"))
        rec.emit(FileEdit(tool_call_id="t4", path="test_app.py", diff="+def test_health(): ...\n"))
        rec.emit(ShellCommand(tool_call_id="t5", command="pytest -q", exit_code=0, output="2 passed"))
        rec.emit(CheckResult(command="pytest -q", exit_code=0, passed=True))
        rec.emit(PrOpened(number=7, url="http://forge.local/pr/7"))
        rec.emit(RunFinished(phase="awaiting_approval"))
        rec.close()
    return ["ls -la", "app.py", "pytest -q", "test_app.py", "pytest -q"]


def test_show_lists_every_command_and_edit_in_order(settings: Settings) -> None:
    expected = demo_run(settings)
    result = runner.invoke(app, ["show", "run-demo"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = result.output
    pos = 0
    for needle in expected:  # each in order after the previous one
        found = text.find(needle, pos)
        assert found >= 0, f"{needle!r} missing after offset {pos}:\n{text}"
        pos = found + len(needle)
    assert "[exit 1]" in text and "+def health(): ..." in text
    data = json.loads(runner.invoke(app, ["show", "run-demo", "--json"]).output)
    assert data["counts"] == {"saw": 1, "decided": 1, "did": 5, "shipped": 2, "run": 1}
    did = [e["summary"] for e in data["entries"] if e["section"] == "did"]
    assert did == [
        "$ ls -la  [exit 0]",
        "edit app.py",
        "$ pytest -q  [exit 1]",
        "edit test_app.py",
        "$ pytest -q  [exit 0]",
    ]


def test_verify_export_and_offline_file_verification(settings: Settings, tmp_path: Path) -> None:
    demo_run(settings)
    ok = runner.invoke(app, ["verify", "run-demo"])
    assert ok.exit_code == 0 and "chain OK, 10 events" in ok.output
    out = tmp_path / "run.jsonl"
    assert runner.invoke(app, ["export", "run-demo", "--format", "jsonl", "-o", str(out)]).exit_code == 0
    assert len(out.read_text().splitlines()) == 11  # 10 events and the closing checkpoint
    offline = runner.invoke(app, ["verify", "--file", str(out), "--strict", "--json"])
    assert offline.exit_code == 0, offline.output
    assert json.loads(offline.output)[0]["ok"] is True

    db = sqlite3.connect(settings.audit_db)
    db.execute("DROP TRIGGER events_no_update")
    db.execute("UPDATE events SET data=replace(data, 'pytest -q', 'true') WHERE seq=5")
    db.commit()
    db.close()
    bad = runner.invoke(app, ["verify", "run-demo"])
    assert bad.exit_code == 1 and "edited at seq 5" in bad.output
    bad_json = json.loads(runner.invoke(app, ["verify", "--all", "--json"]).output)
    assert bad_json[0]["first"]["seq"] == 5 and bad_json[0]["first"]["kind"] == "edited"
    assert runner.invoke(app, ["verify", "--file", str(out)]).exit_code == 0  # the export predates it


def test_tail_and_runs(settings: Settings) -> None:
    demo_run(settings)
    tail = runner.invoke(app, ["tail", "run-demo", "--json"])  # follows until run.finished, then stops
    assert tail.exit_code == 0
    kinds = [json.loads(line)["kind"] for line in tail.output.splitlines()]
    assert kinds[0] == "model.request" and kinds[-1] == "run.finished" and len(kinds) == 10
    runs = json.loads(runner.invoke(app, ["runs", "--json"]).output)
    assert [(r["run_id"], r["events"]) for r in runs] == [("run-demo", 10)]
    usage = runner.invoke(app, ["verify"])
    assert usage.exit_code == 2
    missing = runner.invoke(app, ["show", "no-such-run"])
    assert missing.exit_code == 2
