"""Run overhead: `corral run` against bare `claude -p` in a plain `docker run`, same image and playbook.

Both sides play the same 50-Bash-call playbook with the scripted model, in the same bench run:
  (a) corral: `corral run --playbook` (worktree, proxy, hardened sandbox, self-test, hooks, audit,
      commit, checks);
  (b) baseline: `docker run` of the same image with the scripted model on a bind-mounted unix socket
      bridged by socat, and `claude -p` with the same tools allowed;
  (c) warm server (unless `--no-server`): `corral run --server URL --playbook`, submitted to one
      `corral server` started before the rounds and warmed by one unmeasured run, so the run
      executes in a process whose imports, stores and Docker client are already loaded.
Prints the wall-time ratio a/b, corral's time to its first model request, the added latency per tool
call (a−b)/50, and the orchestrator's peak memory, for each `[sandbox].runtime` in `--runtimes`
(default runc); both sides of a pair use the same Docker runtime (for runsc, the `runsc-corral` that
`make gvisor` registers: a corral run under Debian's runsc fails closed, docs/security.md).
For (c) it also prints submission → first model request: from the client's start, and from the
server's `run.created` (the run recorded, before the API answers).
With `--warm N` the server is `corral server --warm N` (corral.sandbox.warm): N pre-created,
self-tested sandboxes per image, and each measured submission waits until the pool is full again.
  (d) warm worker (with `--worker`): `corral run --playbook` submitted through Temporal to one
      `corral worker --max-runs 1 --warm N` (N from `--warm`, else 1) on a fresh queue, warmed by one
      unmeasured run; submitter and worker share SQLite stores, as one host's fleet would. The times
      to the first model request come from the run's audited events.
Run: `python bench/run_overhead.py [--repeat N] [--runtimes runc,runsc] [--no-server] [--warm N]
[--worker]` (`--worker` uses CORRAL_TEST_TEMPORAL_ADDRESS when set, else starts
`temporal server start-dev` from this venv).
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

import uvicorn

from corral.config import DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE
from corral.model.playbook import Playbook
from corral.model.scripted import scripted_app
from corral.sandbox import DOCKER_RUNTIMES, OWNER_LABEL, POOL_LABEL
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


def corral_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "corral", *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def start_server(runtime: str, warm: int = 0) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """A `corral server` on a free loopback port, and the client's env (with its approver token)."""
    env = clean_env(Path(tempfile.mkdtemp(prefix="cbsrv", dir="/tmp")), runtime)
    corral_cli(env, "user", "add", "bench", "--role", "approver", "--password", "")
    env["CORRAL_SERVER_TOKEN"] = corral_cli(env, "user", "token", "bench")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "corral", "server", "--listen", f"127.0.0.1:{port}"]
    argv += ["--warm", str(warm)] if warm else []
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, url, env
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("corral server did not start") from None
            time.sleep(0.1)


def wait_pool(env: dict[str, str], warm: int, timeout: float = 300.0) -> None:
    """Until the server's pool holds `warm` ready containers for the agent and for the checks (claimed
    ones are gone by the time their run has finished)."""
    labels = [POOL_LABEL, f"{OWNER_LABEL}={env['CORRAL_HOME']}"]
    deadline = time.monotonic() + timeout
    while len(docker_client().containers.list(filters={"label": labels, "status": "running"})) < 2 * warm:
        if time.monotonic() > deadline:
            raise SystemExit("the warm pool did not fill")
        time.sleep(0.05)


def run_on_server(
    url: str, env: dict[str, str], playbook: Path, work: Path, index: int, runtime: str
) -> tuple[float, float, float]:
    """Wall seconds of `corral run --server`, and seconds to the first model request from the
    client's start and from the server's `run.created`."""
    repo = make_repo(work / f"repo-{index}-{runtime}-server")
    argv = [sys.executable, "-m", "corral", "run", "bench", "--repo", str(repo)]
    argv += ["--playbook", str(playbook), "--json", "--server", url]
    started_wall = time.time()
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit("corral run --server failed:\n" + (done.stdout + done.stderr)[-3000:])
    return (wall, *to_first_request(done.stdout, started_wall))


def to_first_request(event_lines: str, started_wall: float) -> tuple[float, float]:
    """Seconds to the run's first model request from `started_wall` and from its `run.created`, read
    from JSON event lines (`--json` progress or `corral audit export`)."""
    stamps: dict[str, float] = {}
    for line in event_lines.splitlines():
        if line.startswith("{") and '"kind"' in line:
            event = json.loads(line)
            stamps.setdefault(event.get("kind", ""), datetime.fromisoformat(event["ts"]).timestamp())
    first = stamps.get("model.request", float("nan"))
    return first - started_wall, first - stamps.get("run.created", float("nan"))


class WarmWorker:
    """One `corral worker --warm N` on a fresh queue of a Temporal server, and the submitter's env."""

    def __init__(self, runtime: str, warm: int) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from bench.scale_out import temporal_server

        self.address, self.temporal = temporal_server()
        root = Path(tempfile.mkdtemp(prefix="cbwrk", dir="/tmp"))
        self.env = clean_env(root / "submitter", runtime)
        self.env.update(
            CORRAL_TEMPORAL_ADDRESS=self.address,
            CORRAL_TEMPORAL_QUEUE=f"bench{os.getpid()}{runtime}",
            CORRAL_STATE_URL=f"sqlite:///{root}/state.db",
            CORRAL_AUDIT_URL=f"sqlite:///{root}/audit.db",
            CORRAL_FORGE_DIR=str(root / "forge"),
            ANTHROPIC_API_KEY=CANARY,
        )
        self.worker_env = {**self.env, "CORRAL_HOME": str(root / "worker")}
        self.warm = warm
        argv = ["worker", "--host-id", f"bench-{runtime}", "--max-runs", "1", "--warm", str(warm)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral", *argv],
            env=self.worker_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while '"bench-' not in corral_cli(self.env, "workers", "--json"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("corral worker did not register")
            time.sleep(0.5)

    def run(self, playbook: Path, work: Path, index: int, runtime: str) -> tuple[float, float, float]:
        """Wall seconds of a `corral run` through the worker, and seconds to the first model request
        from the client's start and from `run.created`."""
        wait_pool(self.worker_env, self.warm)
        repo = make_repo(work / f"repo-{index}-{runtime}-worker")
        argv = [sys.executable, "-m", "corral", "run", "bench", "--repo", str(repo)]
        argv += ["--playbook", str(playbook), "--json"]
        started_wall = time.time()
        started = time.perf_counter()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit("corral run through the worker failed:\n" + (done.stdout + done.stderr)[-3000:])
        created = [ln for ln in done.stdout.splitlines() if ln.startswith("{") and '"run.created"' in ln]
        if not created:
            raise SystemExit("corral run through the worker printed no run.created:\n" + done.stdout[-3000:])
        run_id = json.loads(created[0])["run_id"]
        return (wall, *to_first_request(corral_cli(self.env, "audit", "export", run_id), started_wall))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.temporal is not None:
            self.temporal.send_signal(signal.SIGTERM)
            self.temporal.wait(60)


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
        "docker", "run", "--rm", f"--runtime={DOCKER_RUNTIMES[runtime]}", "--network", "none",
        "--user", "1000:1000", "--read-only",
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


def server_summary(
    runtime: str,
    runs: list[tuple[float, float, int, float]],
    served: list[tuple[float, float, float]],
    arm: str = "c",
    what: str = "corral run --server, warm",
) -> list[tuple[str, str, str]]:
    c = statistics.median(s[0] for s in served)
    b = statistics.median(run[3] for run in runs)
    return [
        (runtime, f"wall time, {what} ({arm}), p50", f"{c:.2f} s"),
        (runtime, f"ratio {arm}/b", f"{c / b:.2f}"),
        (
            runtime,
            f"client start → first model request ({arm}), p50",
            f"{statistics.median(s[1] for s in served):.2f} s",
        ),
        (
            runtime,
            f"run.created → first model request ({arm}), p50",
            f"{statistics.median(s[2] for s in served):.2f} s",
        ),
        (runtime, f"added latency per tool call ({arm}−b)/50", f"{(c - b) / CALLS * 1000:.1f} ms"),
    ]


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runtimes", help="sandbox runtimes, comma-separated: runc, runsc (default: runc)")
    parser.add_argument("--no-server", action="store_true", help="Skip arm (c), the warm corral server.")
    parser.add_argument("--warm", type=int, default=0, help="Serve arm (c) with `corral server --warm N`.")
    parser.add_argument("--worker", action="store_true", help="Add arm (d): a warm `corral worker`.")
    args = parser.parse_args()
    ensure_images(docker_client(), DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE, progress=print)
    runtimes = args.runtimes.split(",") if args.runtimes else ["runc"]
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    playbook_path = work / "fifty.yaml"
    playbook_path.write_text(playbook_text())
    playbook = Playbook.from_path(playbook_path)
    runs: dict[str, list[tuple[float, float, int, float]]] = {runtime: [] for runtime in runtimes}
    served: dict[str, list[tuple[float, float, float]]] = {runtime: [] for runtime in runtimes}
    servers = {} if args.no_server else {runtime: start_server(runtime, args.warm) for runtime in runtimes}
    workers = {runtime: WarmWorker(runtime, args.warm or 1) for runtime in runtimes} if args.worker else {}
    through_worker: dict[str, list[tuple[float, float, float]]] = {runtime: [] for runtime in runtimes}
    try:
        for runtime, (_, url, env) in servers.items():
            run_on_server(url, env, playbook_path, work, -1, runtime)  # warm-up, not measured
        for runtime, worker in workers.items():
            worker.run(playbook_path, work, -1, runtime)  # warm-up, not measured
        for i in range(args.repeat):  # interleaved, so drift in machine load hits every side alike
            for runtime in runtimes:
                wall, first, peak = run_corral(playbook_path, work, i, runtime)
                base = run_baseline(playbook, work, i, runtime)
                runs[runtime].append((wall, first, peak, base))
                line = f"  round {i + 1} {runtime}: corral {wall:.2f}s (first request {first:.2f}s)  "
                if runtime in servers:
                    _, url, env = servers[runtime]
                    if args.warm:
                        wait_pool(env, args.warm)
                    served[runtime].append(run_on_server(url, env, playbook_path, work, i, runtime))
                    line += f"server {served[runtime][-1][0]:.2f}s ({served[runtime][-1][1]:.2f}s)  "
                if runtime in workers:
                    got = workers[runtime].run(playbook_path, work, i, runtime)
                    through_worker[runtime].append(got)
                    line += f"worker {got[0]:.2f}s ({got[1]:.2f}s)  "
                print(f"{line}baseline {base:.2f}s  load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        for worker in workers.values():
            worker.stop()
    rows = [row for runtime in runtimes for row in summary(runtime, runs[runtime])]
    rows += [row for runtime in servers for row in server_summary(runtime, runs[runtime], served[runtime])]
    rows += [
        row
        for runtime in workers
        for row in server_summary(
            runtime, runs[runtime], through_worker[runtime], "d", "corral run, warm worker"
        )
    ]
    print(f"\n### Run overhead ({CALLS} Bash calls, {args.repeat} rounds per runtime)\n")
    print("| runtime | measure | value |\n|---|---|---|")
    for runtime, name, value in rows:
        print(f"| {runtime} | {name} | {value} |")


if __name__ == "__main__":
    main()
