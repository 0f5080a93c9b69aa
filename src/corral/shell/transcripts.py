"""Keep the CLI's own conversation across sessions, for `corral shell --resume`.

Claude Code writes each conversation to `~/.claude/projects/<cwd slug>/<session id>.jsonl` in the
sandbox HOME, a tmpfs that dies with the container. At the end of a session corral copies only those
transcript files out, into `<corral home>/sessions/<run id>/`, with every registered secret (the
run's placeholder key among them) redacted; HOME's `.claude.json` and any credential file stay
behind. On resume they are copied into the new sandbox's HOME before the CLI starts.

What comes out of the sandbox is hostile: nothing is extracted by the archive's own names. Only
regular `projects/<dir>/<file>.jsonl` members are read, and written under `target` by corral.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from corral.audit.redact import Redactor
from corral.errors import SandboxError
from corral.sandbox import Sandbox

CLAUDE_DIR = "/home/agent/.claude"
_MAX_BYTES = 256 * 1024 * 1024


def session_dir(home: Path, run_id: str) -> Path:
    return home / "sessions" / run_id


def _run(argv: list[str], data: bytes | None = None) -> bytes:
    proc = subprocess.run(argv, input=data, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"copying the CLI's session files failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def save(sandbox: Sandbox, target: Path, redactor: Redactor) -> list[Path]:
    """Copy the session transcripts out of the sandbox HOME into `target`; returns what was kept."""
    archive = _run(
        sandbox.exec_command(
            ["sh", "-c", f"cd {CLAUDE_DIR} 2>/dev/null && [ -d projects ] && tar -cf - projects || true"]
        )
    )
    if not archive or len(archive) > _MAX_BYTES:
        return []
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept: list[Path] = []
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isreg() or parts[:1] != ("projects",) or not member.name.endswith(".jsonl"):
                continue
            if ".." in parts or len(parts) != 3:
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            text = redactor.redact_text(source.read().decode(errors="replace"))
            path = target.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(text)
            kept.append(path)
    return kept


def restore(sandbox: Sandbox, source: Path) -> int:
    """Copy saved transcripts into the new sandbox's HOME; returns how many files."""
    files = sorted(source.glob("projects/*/*.jsonl")) if source.is_dir() else []
    if not files:
        return 0
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in files:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(source).as_posix())
            info.uid = info.gid = 1000
            info.uname = info.gname = ""
            info.mode = 0o600
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    _run(
        sandbox.exec_command(["sh", "-c", f"mkdir -p {CLAUDE_DIR} && tar -C {CLAUDE_DIR} -xf -"]),
        buffer.getvalue(),
    )
    return len(files)
