"""Run overhead: `corral run` against bare `claude -p` in a plain `docker run`, same image and playbook.

Both sides play the same 50-Bash-call playbook with the scripted model, in the same bench run:
  (a) corral: `corral run --playbook` (worktree, proxy, hardened sandbox, self-test, hooks, audit,
      commit, checks);
  (b) baseline: `docker run` of the same image with the scripted model on a bind-mounted unix socket
      bridged by socat, and `claude -p` with the same tools allowed.
Prints the wall-time ratio a/b, corral's time to its first model request, the added latency per tool
call (a−b)/50, and the orchestrator's peak memory, for each runtime in `--runtimes` (default runc: a
corral run under Debian's runsc fails closed at the non-dumpable check, docs/security.md); both sides
of a pair use the same runtime.
With `--warm N` a third arm (c) submits the same run to a long-lived `corral server --warm N` over its
run API, in the same rounds: the server keeps its imports and stores and N pre-created, self-tested
sandboxes per image (corral.sandbox.warm), waits for its pool to be full before each submission, and
is timed from the submission to the run's `run.finished` event, with its first `model.request`.
Run: `python bench/run_overhead.py [--repeat N] [--runtimes runc,runsc] [--warm N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import uvicorn

from corral.config import DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE
from corral.model.playbook import Playbook
from corral.model.scripted import scripted_app
from corral.sandbox import POOL_LABEL
from corral.sandbox.images import docker_client, ensure_images

CALLS = 50
MODEL = "claude-sonnet-4-5-20250929"
CANARY = "sk-ant-bench-canary-0000000000000000"


def playbook_text() -> str:
    lines = ["turns:"]
    for i in range(CALLS):
        lines.append(f"  - tool_use: [{{name: Bash, input: {{command: 'echo call-{i}'}}}}]")
    lines.append("  - text: done")
    return "\n".join(lines) + "\n"


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "a.txt").write_text("a\n")
    (root / "corral.toml").write_text("[checks]\ncommand = 'true'\n")
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "i"], check=True)
    return root


def clean_env(home: Path, runtime: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["CORRAL_HOME"] = str(home)
    env["CORRAL_SANDBOX_RUNTIME"] = runtime
    return env


def run_corral(playbook: Path, work: Path, index: int, runtime: str) -> tuple[float, float, int]:
    """Wall seconds, seconds to the first model request, and peak RSS (KiB) of `corral run`."""
    home = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    repo = make_repo(work / f"repo-{index}-{runtime}")
    started_wall = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral",
            "run",
            "bench",
            "--repo",
            str(repo),
            "--playbook",
            str(playbook),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=clean_env(home, runtime),
        text=True,
    )
    assert proc.stdout is not None
    first_request: float | None = None
    output = []
    for line in proc.stdout:
        output.append(line)
        if first_request is None and line.startswith("{") and '"model.request"' in line:
            ts = json.loads(line)["ts"]
            first_request = datetime.fromisoformat(ts).timestamp() - started_wall
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("corral run failed:\n" + "".join(output[-20:]))
    return wall, first_request or float("nan"), usage.ru_maxrss


def serve_scripted(playbook: Playbook, sock_path: Path) -> uvicorn.Server:
    server = uvicorn.Server(
        uvicorn.Config(scripted_app(playbook, "/workspace"), uds=str(sock_path), log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    sock_path.chmod(0o666)
    return server


def run_baseline(playbook: Playbook, work: Path, index: int, runtime: str) -> float:
    sock_dir = Path(tempfile.mkdtemp(prefix="cbs", dir="/tmp"))
    sock_dir.chmod(0o755)
    server = serve_scripted(playbook, sock_dir / "model.sock")
    workspace = work / f"ws-{index}-{runtime}"
    workspace.mkdir()
    os.chown(workspace, 1000, 1000)
    script = (
        "socat TCP-LISTEN:7301,bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/run/corral/model.sock & "
        "while ! (exec 3<>/dev/tcp/127.0.0.1/7301) 2>/dev/null; do sleep 0.01; done; "
        f"claude -p 'bench' --model {MODEL} --max-turns 200 --allowedTools Bash "
        "--output-format json > /dev/null"
    )
    argv = [
        "docker", "run", "--rm", f"--runtime={runtime}", "--network", "none", "--user", "1000:1000",
        "--read-only",
        "--tmpfs", "/tmp", "--tmpfs", "/home/agent:uid=1000,gid=1000",
        "-v", f"{sock_dir}:/run/corral", "-v", f"{workspace}:/workspace", "-w", "/workspace",
        "-e", "HOME=/home/agent", "-e", "ANTHROPIC_BASE_URL=http://127.0.0.1:7301",
        "-e", f"ANTHROPIC_API_KEY={CANARY}",
        "-e", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "-e", "DISABLE_AUTOUPDATER=1",
        DEFAULT_IMAGE, "bash", "-c", script,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    server.should_exit = True
    return wall


class WarmServer:
    """`corral server --warm N` in its own corral home, with an approver's API token."""

    def __init__(self, size: int, runtime: str) -> None:
        self.size = size
        self.home = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))
        self.env = clean_env(self.home, runtime)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{s.getsockname()[1]}"
        corral = [sys.executable, "-m", "corral"]
        subprocess.run([*corral, "user", "add", "bench", "--role", "approver", "--password", ""],
                       env=self.env, check=True, capture_output=True)  # fmt: skip
        token = subprocess.run([*corral, "user", "token", "bench"], env=self.env, check=True,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        self.headers = {"Authorization": f"Bearer {token}"}
        listen = self.url.removeprefix("http://")
        self.claimed: set[str] = set()
        argv = [*corral, "server", "--listen", listen, "--warm", str(size)]
        self.log = (self.home / "server.log").open("w")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_full(self, timeout: float = 300.0) -> None:
        """Until the pool holds `size` ready containers for the agent and for the checks."""
        client = docker_client()
        deadline = time.monotonic() + timeout
        labels = [POOL_LABEL, f"io.corral.owner={self.home}"]
        while time.monotonic() < deadline:
            pooled = client.containers.list(filters={"label": labels, "status": "running"})
            if len([c for c in pooled if c.id not in self.claimed]) >= 2 * self.size:
                return
            time.sleep(0.05)
        raise SystemExit("the warm pool did not fill")

    def run(self, playbook: Path, work: Path, index: int) -> tuple[float, float]:
        """Seconds from submission to `run.finished`, and to the first `model.request`."""
        repo = make_repo(work / f"repo-warm-{index}")
        self.wait_full()
        body = {"repo": str(repo), "task": "bench", "playbook": str(playbook)}
        started = time.time()
        accepted = httpx.post(f"{self.url}/api/runs", json=body, headers=self.headers, timeout=300)
        accepted.raise_for_status()
        run_id = accepted.json()["run_id"]
        first: float | None = None
        url = f"{self.url}/api/runs/{run_id}/events?raw=true"
        with httpx.stream("GET", url, headers=self.headers, timeout=300) as events:
            for line in events.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                ts = datetime.fromisoformat(event["ts"]).timestamp() - started
                if event["kind"] == "sandbox.created":
                    self.claimed.add(event["container_id"])
                if event["kind"] == "model.request" and first is None:
                    first = ts
                if event["kind"] == "run.finished":
                    if event["phase"] != "awaiting_approval":
                        raise SystemExit(f"warm run {run_id} ended {event['phase']}: {event['reason']}")
                    # The refill happens between runs, never during another arm's timing.
                    self.wait_full()
                    return ts, first or float("nan")
        raise SystemExit(f"warm run {run_id}: the event stream ended before run.finished")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(120)


def summary(runtime: str, runs: list[tuple[float, float, int, float]]) -> list[tuple[str, str, str]]:
    first = statistics.median(run[1] for run in runs)
    a = statistics.median(run[0] for run in runs)
    b = statistics.median(run[3] for run in runs)
    return [
        (runtime, "wall time, corral run (a), p50", f"{a:.2f} s"),
        (runtime, "wall time, bare claude -p in docker run (b), p50", f"{b:.2f} s"),
        (runtime, "ratio a/b", f"{a / b:.2f}"),
        (runtime, "corral run start → first model request, p50", f"{first:.2f} s"),
        (runtime, "per tool call, corral run a/50", f"{a / CALLS * 1000:.0f} ms"),
        (runtime, "per tool call, bare b/50", f"{b / CALLS * 1000:.0f} ms"),
        (runtime, "added latency per tool call (a−b)/50", f"{(a - b) / CALLS * 1000:.1f} ms"),
        (runtime, "orchestrator peak RSS, max", f"{max(r[2] for r in runs) / 1024:.0f} MiB"),
    ]


def warm_summary(
    runtime: str, warm: list[tuple[float, float]], base: list[float]
) -> list[tuple[str, str, str]]:
    c = statistics.median(run[0] for run in warm)
    b = statistics.median(base)
    return [
        (runtime, "wall time, warm server submission → run.finished (c), p50", f"{c:.2f} s"),
        (runtime, "ratio c/b (warm)", f"{c / b:.2f}"),
        (
            runtime,
            "warm submission → first model request, p50",
            f"{statistics.median(r[1] for r in warm):.2f} s",
        ),
        (runtime, "added latency per tool call, warm (c−b)/50", f"{(c - b) / CALLS * 1000:.1f} ms"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runtimes", help="Docker runtimes, comma-separated (default: runc, runsc)")
    parser.add_argument("--warm", type=int, default=0, help="also time runs through `corral server --warm N`")
    args = parser.parse_args()
    ensure_images(docker_client(), DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE, progress=print)
    runtimes = args.runtimes.split(",") if args.runtimes else ["runc"]
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    playbook_path = work / "fifty.yaml"
    playbook_path.write_text(playbook_text())
    playbook = Playbook.from_path(playbook_path)
    runs: dict[str, list[tuple[float, float, int, float]]] = {runtime: [] for runtime in runtimes}
    warm: dict[str, list[tuple[float, float]]] = {runtime: [] for runtime in runtimes}
    servers = {runtime: WarmServer(args.warm, runtime) for runtime in runtimes} if args.warm else {}
    try:
        for server in servers.values():
            server.wait_full()
        for i in range(args.repeat):  # interleaved, so drift in machine load hits every side alike
            for runtime in runtimes:
                wall, first, peak = run_corral(playbook_path, work, i, runtime)
                base = run_baseline(playbook, work, i, runtime)
                runs[runtime].append((wall, first, peak, base))
                line = f"  round {i + 1} {runtime}: corral {wall:.2f}s (first request {first:.2f}s)  "
                if runtime in servers:
                    warm[runtime].append(servers[runtime].run(playbook_path, work, i))
                    line += f"warm {warm[runtime][-1][0]:.2f}s (first request {warm[runtime][-1][1]:.2f}s)  "
                print(f"{line}baseline {base:.2f}s  load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    rows = [row for runtime in runtimes for row in summary(runtime, runs[runtime])]
    for runtime in servers:
        rows += warm_summary(runtime, warm[runtime], [run[3] for run in runs[runtime]])
    print(f"\n### Run overhead ({CALLS} Bash calls, {args.repeat} rounds per runtime)\n")
    print("| runtime | measure | value |\n|---|---|---|")
    for runtime, name, value in rows:
        print(f"| {runtime} | {name} | {value} |")


if __name__ == "__main__":
    main()
