"""What the interactive CLI is given: managed settings (hooks and permission rules it cannot drop) and
the sandbox HOME config that pre-answers its first-run dialogs.

Claude Code 2.1.332 on Linux reads managed settings from `/etc/claude-code/managed-settings.json`
(and drop-ins in `managed-settings.d/`, which the read-only root keeps empty). Managed settings take
precedence over user, project and local settings; `allowManagedHooksOnly` makes user, project and
local hooks (and plugins the user installed) not run at all, and `allowManagedPermissionRulesOnly`
ignores permission rules from every other source, so nothing the agent writes into the workspace's
`.claude/settings*.json` or into HOME can remove, reorder or bypass these hooks or rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from corral.sandbox import SOCKETS_IN_CONTAINER

MANAGED_SETTINGS_IN_CONTAINER = "/etc/claude-code/managed-settings.json"
FORWARDER_IN_CONTAINER = "/etc/claude-code/corral-hook.sh"
HOOK_SOCKET = "hook.sock"
"""The host's hook endpoint in the run's socket directory (the forwarder connects to it directly)."""
HOOK_EVENTS = ("PreToolUse", "PostToolUse", "PostToolUseFailure", "UserPromptSubmit", "SessionEnd")
HOOK_TIMEOUT_SECONDS = 120
"""Above the forwarder's own 60 s limit, so a slow host is the forwarder's exit 2, not a timeout."""
FORWARDER_SOURCE = Path(__file__).with_name("forward.sh")


PATH = "/usr/local/bin:/usr/bin:/bin"
PINNED_ENV = {
    "PATH": PATH,
    # User and project settings may set `env`, which Claude Code also hands to hook processes; managed
    # settings win key by key. These would let the agent run its own code in the shell that starts
    # the forwarder (the dynamic loader's inputs) or switch the hooks surface off.
    **dict.fromkeys(
        (
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "GCONV_PATH",
            "GLIBC_TUNABLES",
            "LOCPATH",
            "NLSPATH",
            "BASH_ENV",
            "ENV",
            "CLAUDE_CODE_SHELL",
            "CLAUDE_CODE_SHELL_PREFIX",
            "CLAUDE_CODE_SHELL_LAUNCHER_SCRIPT",
            "CLAUDE_CODE_SIMPLE",
            "CLAUDE_CODE_SAFE_MODE",
            "CLAUDE_CODE_DISABLE_HOOK_FORWARDING",
        ),
        "",
    ),
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
}


def hook_argv() -> list[str]:
    """What every managed hook runs: the forwarder with an empty environment, by absolute paths, so
    nothing the agent can write (HOME, the workspace, variables) is read on the way."""
    return [
        "/usr/bin/env",
        "-i",
        f"PATH={PATH}",
        "/bin/sh",
        FORWARDER_IN_CONTAINER,
        f"{SOCKETS_IN_CONTAINER}/{HOOK_SOCKET}",
    ]


def command_hook() -> dict[str, Any]:
    """One managed command hook. The exec form (`args`) spawns it with no shell in between, and
    `onFailure: block` makes a hook that cannot start, times out, is killed or exits with a code
    other than 0 or 2 block the action; Claude Code's default for those is to let it go ahead."""
    command, *args = hook_argv()
    return {
        "type": "command",
        "command": command,
        "args": args,
        "timeout": HOOK_TIMEOUT_SECONDS,
        "onFailure": "block",
    }


def managed_settings(allowed_tools: list[str]) -> dict[str, Any]:
    """Hooks on every event corral decides or audits, and the same allow-list as a headless run."""
    hook = command_hook()
    return {
        "allowManagedHooksOnly": True,
        "allowManagedPermissionRulesOnly": True,
        "allowManagedMcpServersOnly": True,
        "disableAllHooks": False,
        "hooks": {event: [{"matcher": "*", "hooks": [hook]}] for event in HOOK_EVENTS},
        "permissions": {
            "allow": list(allowed_tools),
            "defaultMode": "default",
            "disableBypassPermissionsMode": "disable",
            "disableAutoMode": "disable",
        },
        "env": dict(PINNED_ENV),
    }


def home_config(workdir: str, model_token: str) -> dict[str, Any]:
    """`~/.claude.json` for the sandbox HOME: onboarding done, the workspace trusted, and the run's
    placeholder key approved, so the TUI opens straight to a prompt."""
    return {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": "2.1.332",
        "theme": "dark",
        "autoUpdates": False,
        # Claude Code asks once per API key, remembered by the key's last 20 characters.
        "customApiKeyResponses": {"approved": [model_token[-20:]], "rejected": []},
        "projects": {
            workdir: {
                "hasTrustDialogAccepted": True,
                "hasCompletedProjectOnboarding": True,
                "projectOnboardingSeenCount": 1,
                "allowedTools": [],
            }
        },
    }


def write_run_files(directory: Path, allowed_tools: list[str]) -> dict[str, Path]:
    """Write the managed settings and the forwarder for one run; container path -> host file.

    The files are written by corral's own uid, mode 0444, into a directory only corral can write.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    settings = directory / "managed-settings.json"
    forwarder = directory / "corral-hook.sh"
    for path, text in (
        (settings, json.dumps(managed_settings(allowed_tools), indent=2)),
        (forwarder, FORWARDER_SOURCE.read_text()),
    ):
        path.unlink(missing_ok=True)
        path.write_text(text)
        path.chmod(0o444)
    return {MANAGED_SETTINGS_IN_CONTAINER: settings, FORWARDER_IN_CONTAINER: forwarder}
