#!/bin/sh
# corral's hook forwarder: Claude Code runs it, inside the sandbox, for every managed hook.
#
# It sends the hook's JSON (stdin) to the host's hook socket ($1) and replays the answer, whose first
# character is the exit code: "0" then what goes to stdout, or "2" then the reason, to stderr.
# Anything else (no socket, a dead host, no answer) exits 2, which Claude Code treats as a block: an
# unreachable host means deny. sh and socat only (started within a few ms, unlike an interpreter);
# bound read-only into the sandbox and run with an empty environment, so the agent can neither
# change it nor reach into it.
reply=$(/usr/bin/socat -t 60 -T 60 - "UNIX-CONNECT:$1" 2>/dev/null)
rest=${reply#?}
code=${reply%"$rest"}
case $code in
  0) printf '%s' "$rest"; exit 0 ;;
  2) printf '%s\n' "$rest" >&2; exit 2 ;;
  *) echo "corral: the host's hook endpoint is unreachable or gave no answer; the call is denied" >&2; exit 2 ;;
esac
