"""The hook forwarder: Claude Code runs it (inside the sandbox) for every managed hook.

It sends the hook's JSON from stdin to the host's hook socket and replays the host's answer: its
stdout, its stderr and its exit code. Anything that goes wrong (no socket, a dead host, a garbled
answer) exits 2, which Claude Code treats as a block: an unreachable host means deny.

It runs with the image's python3 and the standard library only, and it is bound read-only into the
sandbox, so the agent can neither change nor replace it.
"""

import json
import socket
import sys

DEFAULT_SOCKET = "/run/corral/hook.sock"
TIMEOUT_SECONDS = 60.0
LIMIT = 8 * 1024 * 1024


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SOCKET
    payload = sys.stdin.buffer.read(LIMIT + 1)
    if len(payload) > LIMIT:
        sys.stderr.write("corral: the hook input is over 8 MiB; refused\n")
        return 2
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(TIMEOUT_SECONDS)
            conn.connect(path)
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        answer = json.loads(b"".join(chunks))
        code = int(answer["exit"])
        sys.stdout.write(str(answer.get("stdout", "")))
        sys.stderr.write(str(answer.get("stderr", "")))
        return code
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"corral: the host's hook endpoint is unreachable ({exc}); the call is denied\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
