"""Importing the `corral` CLI must not import the heavy libraries behind its sub-commands.

Every `corral` invocation, `corral --help` included, imports corral.cli; the docker SDK, sqlalchemy,
alembic, pymongo, mcp and the Agent SDK belong to the commands that use them, not to start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("mcp", "sqlalchemy", "alembic", "docker", "pymongo", "claude_agent_sdk", "opentelemetry")

SRC = Path(__file__).resolve().parents[2] / "src"

# A fresh interpreter: this test process has long since imported all of them.
PROBE = f"""
import json, sys
sys.path.insert(0, {str(SRC)!r})
import corral.cli
heavy = {set(HEAVY)!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def _modules_loaded_by(probe: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_cli_loads_none_of_the_heavy_libraries() -> None:
    assert _modules_loaded_by(PROBE) == []


def test_the_probe_sees_a_heavy_import_when_there_is_one() -> None:
    """The check above can fail: importing a sub-command's library shows up in the probe."""
    probe = PROBE.replace("import corral.cli\n", "import corral.cli\nimport corral.state.db\n")
    assert "sqlalchemy" in _modules_loaded_by(probe)


BROKEN_GROUP = f"""
import sys
sys.path.insert(0, {str(SRC)!r})


class Broken:
    def find_spec(self, name, path=None, target=None):
        if name == "corral.cli.image":
            raise ImportError("No module named 'docker' (simulated)")
        return None


sys.meta_path.insert(0, Broken())
sys.argv = ["corral", *sys.argv[1:]]
from corral.cli import main
main()
"""


def test_a_command_group_that_cannot_import_is_listed_and_fails_clearly() -> None:
    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", BROKEN_GROUP, *args], capture_output=True, text=True, timeout=60
        )

    help_text = corral("--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "image" in help_text.stdout and "unavailable" in help_text.stdout
    used = corral("image", "list")
    assert used.returncode == 2
    assert "`corral image` commands cannot be loaded" in used.stderr
    assert "simulated" in used.stderr and "reinstall" in used.stderr
