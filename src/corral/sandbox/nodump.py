"""Fail closed unless the sandbox image can make Claude Code non-dumpable, under this kernel.

Claude Code shares its uid with the tools it spawns, so only the kernel's dumpable flag keeps them
out of its /proc/PID/fd, environ and memory. The agent image's preload library sets it (see
dockerfiles/nodump.c); this check runs before the agent starts, like the egress self-test.

It tests what the flag is for rather than how one kernel shows it: a process started with the library
spawns a child (dumpable again after its execve, uid 1000: what every agent tool is), and the child
must fail to open the parent's environ and memory and to follow its fd links. Linux also gives the
parent's /proc/PID/fd to root; newer gVisor leaves that directory to the uid, so a tool can see which
fd numbers are open, but still refuses to follow them. Debian's gVisor (2022) lets the child read
the environ, and the check fails the run there.
"""

from __future__ import annotations

from corral.errors import SandboxError
from corral.sandbox import NODUMP_LIBRARY, Sandbox

NODUMP_PROBE = (
    'for f in environ mem; do sh -c \'exec 3<"$1"\' - "/proc/$$/$f" 2>/dev/null && echo "readable:$f"; done; '
    'for n in 0 1 2; do readlink "/proc/$$/fd/$n" >/dev/null 2>&1 && echo "readable:fd/$n"; done; '
    "echo probed"
)
"""Run by `sh` with the library preloaded: `$$` is that non-dumpable shell, each command its child."""


def nodump_leaks(sandbox: Sandbox, preload: bool = True) -> list[str]:
    """What a child (an agent tool) could open of a process started with the library (or without it).

    Raises SandboxError when the probe itself did not run to its end, so a broken probe never reads
    as "nothing leaked".
    """
    env = ["env", f"LD_PRELOAD={NODUMP_LIBRARY}"] if preload else []
    probe = sandbox.exec([*env, "sh", "-c", NODUMP_PROBE])
    lines = probe.output.split("\n")
    if probe.exit_code != 0 or "probed" not in lines:
        raise SandboxError(
            f"the non-dumpable probe did not complete in the sandbox: {probe.output.strip()[-300:]!r}",
            hint="the image needs a POSIX sh and coreutils' readlink, as corral/agent:default has",
        )
    return [line.removeprefix("readable:") for line in lines if line.startswith("readable:")]


def check_nodump(sandbox: Sandbox) -> None:
    """Raise SandboxError unless a process started with the preload library is closed to its children.

    Without the library (a team image not built FROM corral/agent) the loader only warns and the
    process stays open to its own uid; under a kernel that ignores the flag in /proc it is open too.
    """
    leaks = nodump_leaks(sandbox)
    if leaks:
        raise SandboxError(
            f"the sandbox cannot make Claude Code non-dumpable ({NODUMP_LIBRARY}): a process of its uid "
            f"opened its {', '.join(leaks)}",
            hint="build the team image FROM corral/agent:default (it carries the library), or run "
            "`corral image build` to rebuild corral's own; under runsc, use a gVisor that honours the "
            "dumpable flag in /proc (docs/security.md, 'Kernel isolation')",
        )
