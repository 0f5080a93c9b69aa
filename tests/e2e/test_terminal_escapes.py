"""Agent-written text never reaches a reviewer's terminal raw (issue: escapes, item 8).

A real run in the real sandbox prints OSC 52 (set the clipboard), clear-screen, cursor moves, colours,
a carriage return and the C1 CSI character, writes them into a file, and the checks print the file.
Every command a reviewer uses afterwards (the run's own progress, `runs`, `show`, `audit show`,
`audit tail`, their `--json` forms and `audit export`) must show those bytes as visible escapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import make_repo

pytestmark = pytest.mark.docker

ATTACK = (
    "\x1b]52;c;ZXZpbA==\x07"  # OSC 52: put "evil" on the reviewer's clipboard
    "\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b[32mall checks passed\x1b[0m"  # a painted verdict
    "\r"  # back to the start of the line, to overwrite what corral printed
    "\u009b31m"  # the C1 CSI, which some terminals obey in UTF-8
    "\u202e"  # a right-to-left override that reorders what follows
)
NOTES = "{workspace}/notes.txt"
RAW = [b"\x1b", b"\x07", b"\r", "\u009b".encode(), "\u202e".encode()]


def corral(*args: str) -> subprocess.CompletedProcess[bytes]:
    # Bytes, not text: text mode would translate the carriage return away before we could look.
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], capture_output=True, env=dict(os.environ), timeout=300
    )


def assert_nothing_raw(what: str, data: bytes) -> None:
    for raw in RAW:
        assert raw not in data, f"{what} printed {raw!r} raw: {data[:400]!r}"


def test_escape_sequences_from_the_agent_are_shown_as_visible_text(agent_image: str, tmp_path: Path) -> None:
    playbook = tmp_path / "attack.yaml"
    bash = {"name": "Bash", "input": {"command": f"printf '%s\\n' '{ATTACK}'"}}
    write = {"name": "Write", "input": {"file_path": NOTES, "content": ATTACK + "\n"}}
    turns = [{"tool_use": [bash]}, {"tool_use": [write]}, {"text": f"Done. {ATTACK}"}]
    playbook.write_text(yaml.safe_dump({"turns": turns}, allow_unicode=True))
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, "[checks]\ncommand = 'cat notes.txt'\n")

    ran = corral("run", "print a status line", "--repo", str(repo), "--playbook", str(playbook))
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    assert_nothing_raw("corral run (progress and summary)", ran.stdout + ran.stderr)
    listed = corral("runs", "--json")
    run_id = json.loads(listed.stdout)[0]["run_id"]

    outputs = {
        "runs": corral("runs"),
        "runs --json": listed,
        "show": corral("show", run_id),
        "show --json": corral("show", run_id, "--json"),
        "audit show": corral("audit", "show", run_id),
        "audit show --json": corral("audit", "show", run_id, "--json"),
        "audit tail": corral("audit", "tail", run_id, "--no-follow"),
        "audit tail --json": corral("audit", "tail", run_id, "--no-follow", "--json"),
        "audit export": corral("audit", "export", run_id),
    }
    for name, done in outputs.items():
        assert done.returncode == 0, (name, done.stderr.decode(errors="replace"))
        assert_nothing_raw(name, done.stdout + done.stderr)

    shown = outputs["audit show"].stdout.decode()
    # The attack is there to read, as text: the reviewer can see what the agent tried.
    assert "\\x1b]52;c;ZXZpbA==\\x07" in shown
    assert "\\x1b[32mall checks passed\\x1b[0m" in shown
    assert "\\x9b31m" in shown and "\\u202e" in shown
    exported = outputs["audit export"].stdout.decode()
    assert "\\u001b]52;c;ZXZpbA==\\u0007" in exported and "\\u009b31m" in exported

    # The escaped export is still the same chain: it verifies offline.
    export_file = tmp_path / "run.jsonl"
    export_file.write_bytes(outputs["audit export"].stdout)
    verified = corral("audit", "verify", "--file", str(export_file))
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
