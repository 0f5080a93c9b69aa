"""Fail closed unless the sandbox image can make Claude Code non-dumpable.

Claude Code shares its uid with the tools it spawns, so only the kernel's dumpable flag keeps them
out of its /proc/PID/fd, environ and memory. The agent image's preload library sets it (see
dockerfiles/nodump.c); this check runs before the agent starts, like the egress self-test.
"""

from __future__ import annotations

from corral.errors import SandboxError
from corral.sandbox import NODUMP_LIBRARY, Sandbox


def check_nodump(sandbox: Sandbox) -> None:
    """Raise SandboxError unless a process started with the preload library is non-dumpable.

    A non-dumpable process's /proc/self/fd belongs to root. Without the library (a team image not
    built FROM corral/agent), the loader only warns and the process stays open to its own uid.
    """
    probe = sandbox.exec(["env", f"LD_PRELOAD={NODUMP_LIBRARY}", "stat", "-c", "%u", "/proc/self/fd"])
    if probe.exit_code != 0 or probe.output.strip() != "0":
        raise SandboxError(
            f"the sandbox image cannot make Claude Code non-dumpable ({NODUMP_LIBRARY}): "
            f"{probe.output.strip()[-300:]!r}",
            hint="build the team image FROM corral/agent:default (it carries the library), "
            "or run `corral image build` to rebuild corral's own",
        )
