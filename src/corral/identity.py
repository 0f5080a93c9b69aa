"""Who is at the keyboard: `CORRAL_USER`, else `git config user.email`, else the login name.

The requester of a run is recorded with it when the run is created, and an approver is named by it, so
that the person who asked for a change cannot be the one whose approval ships it.
"""

from __future__ import annotations

import getpass
import os
import subprocess


def current_user() -> str:
    named = os.environ.get("CORRAL_USER", "").strip()
    if named:
        return named
    try:
        # The user's own global config (HOME is kept), never a repository's: no cwd config is read.
        proc = subprocess.run(
            ["git", "config", "--global", "user.email"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
            cwd="/",
        )
        email = proc.stdout.strip() if proc.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        email = ""
    if email:
        return email
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
