"""Child process for the crash test: emit durable events forever, printing each acknowledged seq.

Run as `python -m tests.audit.crash_child URL`. A line "ack N" is printed only after `emit(...,
durable=True)` has returned, i.e. after the event is fsynced to the spool: the parent then kills this
process with SIGKILL at an arbitrary point and checks every acknowledged event reached the store.
"""

from __future__ import annotations

import sys

from corral.audit.log import AuditLog
from corral.events import ShellCommand, ToolCall
from corral.settings import Settings


def main() -> None:
    audit = AuditLog.open(Settings(), sys.argv[1], ship_interval=0.02)
    recorder = audit.for_run(sys.argv[2])
    i = 0
    while True:
        i += 1
        event = recorder.emit(
            ToolCall(tool_name="Bash", tool_call_id=f"t{i}", input={"command": f"echo {i}"}), durable=True
        )
        print(f"ack {event.seq}", flush=True)
        recorder.emit(ShellCommand(tool_call_id=f"t{i}", command=f"echo {i}", exit_code=0, output=str(i)))


if __name__ == "__main__":
    main()
