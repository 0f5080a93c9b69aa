"""`corral shell`: time to the first prompt, and what the forwarded hooks cost against the SDK's.

    .venv/bin/python bench/shell.py [--repeat 3] [--calls 20] [--hooks 50]

Measured in one bench run, on the real CLI in the real sandbox with the scripted model:
- first prompt ready: from starting `corral shell` in a tmux terminal to Claude Code's prompt status
  line on the screen (worktree, proxy, gateway, hardened sandbox, self-test, HOME config, CLI start).
- hook round trip through the forwarder: inside a hardened sandbox, `sh -c "python3 <forwarder>"` fed
  a PreToolUse JSON (as Claude Code spawns a command hook), to the host's hook socket, the decision
  and the durable audit, and back; against the same host work called directly (what the SDK hook
  path runs too, on the SDK's own stdio channel).
- per tool call, end to end: the same playbook of N Bash calls (a) as a headless `corral run` (SDK
  hooks), (b) as a `corral shell --task` session (forwarded command hooks) and (c) as the same
  session with the managed hooks left out (the interactive CLI's own cost, for attribution only:
  corral itself never runs without them). The figure is the mean interval between consecutive
  main-thread `model.request` events in each run's audit; b − c is what the forwarded hooks add per
  call, c − a what the interactive CLI costs over the headless one.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corral.agent.policy import PathPolicy
from corral.agent.tool_hooks import ToolHooks
from corral.config import DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE
from corral.sandbox import SandboxSpec
from corral.sandbox.docker import DockerBackend
from corral.sandbox.images import docker_client, ensure_images
from corral.services import Services
from corral.settings import Settings
from corral.shell import managed
from corral.shell.hooks import HookServer, SessionHooks
from corral.state.ids import new_run_id

CANARY = "sk-ant-bench-canary-0000000000000000"
READY = "for shortcuts"

HOOK_LOOP = r"""
import json, subprocess, sys, time
n, command = int(sys.argv[1]), sys.argv[2]
times = []
for i in range(n):
    data = json.dumps({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_use_id": f"t{i}",
                       "tool_input": {"command": f"echo {i}"}, "session_id": "bench"})
    t0 = time.perf_counter()
    out = subprocess.run(["sh", "-c", command], input=data, capture_output=True, text=True)
    times.append((time.perf_counter() - t0) * 1000)
    assert out.returncode == 0 and "allow" in out.stdout, out
print(json.dumps(times))
"""


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "a.txt").write_text("a\n")
    (root / "corral.toml").write_text("[checks]\ncommand = 'true'\n")
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "i"], check=True)
    return root


def playbook(work: Path, calls: int) -> Path:
    turns: list[dict[str, Any]] = [
        {"tool_use": [{"name": "Bash", "input": {"command": f"echo call-{i}"}}]} for i in range(calls)
    ]
    turns.append({"text": "bench done"})
    path = work / f"calls-{calls}.yaml"
    path.write_text(json.dumps({"turns": turns}))
    return path


class Tmux:
    def __init__(self, name: str) -> None:
        self.argv = ["tmux", "-L", f"corral-bench-{os.getpid()}", "-f", "/dev/null"]
        self.name = name

    def start(self, command: list[str], env: dict[str, str], work: Path) -> None:
        script = work / f"{self.name}.sh"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script.write_text(
            "#!/bin/sh\n" + exports + " ".join(shlex.quote(a) for a in command) + "\nsleep 600\n"
        )
        script.chmod(0o700)
        subprocess.run(
            [*self.argv, "new-session", "-d", "-s", self.name, "-x", "140", "-y", "45", str(script)]
        )

    def wait_for(self, text: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [*self.argv, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
            ).stdout
            if text in screen:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{text!r} never appeared")

    def type(self, text: str) -> None:
        subprocess.run([*self.argv, "send-keys", "-t", self.name, "-l", text])
        time.sleep(0.3)
        subprocess.run([*self.argv, "send-keys", "-t", self.name, "Enter"])

    def close(self) -> None:
        subprocess.run([*self.argv, "kill-server"], capture_output=True)


def env_for(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "CORRAL_HOME": str(home),
        "ANTHROPIC_API_KEY": CANARY,
        "TERM": "xterm",
    }


def only_run_events(home: Path) -> list[Any]:
    services = Services(Settings(home=home))
    try:
        (run,) = services.state().list_runs(limit=2)
        return list(services.audit().read(run.run_id))
    finally:
        services.close()


def call_interval_ms(events: list[Any]) -> float:
    stamps = [e.ts.timestamp() for e in events if e.kind == "model.request" and e.tools > 0]
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1000


def shell_session(
    work: Path, index: int, book: Path | None, task: str, hooks: bool = True
) -> tuple[float, list[Any]]:
    """Seconds to the first prompt ready, and (with a task) the session's audit."""
    home = Path(tempfile.mkdtemp(prefix="sb", dir="/tmp"))
    repo = make_repo(work / f"shell-{index}")
    term = Tmux(f"s{index}")
    entry = ["-m", "corral"] if hooks else [os.path.abspath(__file__), "--as-corral-without-hooks"]
    command = [sys.executable, *entry, "shell", "--repo", str(repo)]
    if book:
        command += ["--playbook", str(book)]
    if task:
        command += ["--task", task]
    try:
        started = time.perf_counter()
        term.start(command, env_for(home), work)
        term.wait_for(READY)
        ready = time.perf_counter() - started
        if task:
            term.wait_for("bench done")
        term.type("/exit")
        term.wait_for("session ")
        events = only_run_events(home) if task else []
    finally:
        term.close()
        shutil.rmtree(home, ignore_errors=True)
    return ready, events


def headless_run(work: Path, index: int, book: Path) -> list[Any]:
    home = Path(tempfile.mkdtemp(prefix="hb", dir="/tmp"))
    repo = make_repo(work / f"run-{index}")
    try:
        subprocess.run(
            [sys.executable, "-m", "corral", "run", "bench", "--repo", str(repo), "--playbook", str(book)],
            env={**os.environ, **env_for(home)},
            capture_output=True,
            check=True,
        )
        return only_run_events(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def hook_round_trips(n: int) -> tuple[list[float], list[float]]:
    """(through the forwarder inside a sandbox, the same host work called directly), in ms."""
    work = Path(tempfile.mkdtemp(prefix="hk", dir="/tmp"))
    settings = Settings(home=work / "home")
    services = Services(settings)
    run_id = new_run_id()
    recorder = services.audit().for_run(run_id)
    policy = PathPolicy("/workspace", ("locked/**",), ())
    session = SessionHooks(ToolHooks(recorder, policy), recorder, "human:bench", frozenset({"Bash"}))
    sockets = work / "s"
    sockets.mkdir(mode=0o755)
    sockets.chmod(0o755)
    server = HookServer(session, sockets / managed.HOOK_SOCKET)
    (work / "ws").mkdir()
    files = managed.write_run_files(work / "files", ["Bash"])
    spec = SandboxSpec(
        run_id=run_id,
        image=DEFAULT_IMAGE,
        workspace=work / "ws",
        socket_dir=sockets,
        readonly_files=files,
        purpose="bench",
    )
    sandbox = DockerBackend(services.docker(), mask_root=work / "masks").create(spec)
    try:
        command = shlex.join(managed.hook_argv())
        result = sandbox.exec(["python3", "-c", HOOK_LOOP, str(n), command], timeout=300)
        forwarded = [float(x) for x in json.loads(result.output.strip().splitlines()[-1])]
        direct = []
        for i in range(n):
            data = {
                "hook_event_name": "PreToolUse",
                "tool_name": "Bash",
                "tool_use_id": f"d{i}",
                "tool_input": {"command": f"echo {i}"},
            }
            t0 = time.perf_counter()
            session.answer(data)
            direct.append((time.perf_counter() - t0) * 1000)
    finally:
        sandbox.remove()
        server.stop()
        recorder.close()
        services.close()
        shutil.rmtree(work, ignore_errors=True)
    return forwarded, direct


def corral_without_hooks(args: list[str]) -> None:
    """`corral ARGS` with no managed hooks: the bench's baseline arm (c) only."""
    managed.HOOK_EVENTS = ()
    from corral.cli import main as corral_main

    sys.argv = ["corral", *args]
    corral_main()


def main() -> None:
    if sys.argv[1:2] == ["--as-corral-without-hooks"]:
        corral_without_hooks(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--hooks", type=int, default=50)
    args = parser.parse_args()
    ensure_images(docker_client(), DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE)
    work = Path(tempfile.mkdtemp(prefix="shb", dir="/tmp"))
    book = playbook(work, args.calls)
    ready: list[float] = []
    shell_calls: list[float] = []
    run_calls: list[float] = []
    bare_calls: list[float] = []
    for i in range(args.repeat):
        seconds, _ = shell_session(work, 3 * i, None, "")
        ready.append(seconds)
        _, events = shell_session(work, 3 * i + 1, book, "run the bench calls")
        shell_calls.append(call_interval_ms(events))
        _, events = shell_session(work, 3 * i + 2, book, "run the bench calls", hooks=False)
        bare_calls.append(call_interval_ms(events))
        run_calls.append(call_interval_ms(headless_run(work, i, book)))
    forwarded, direct = hook_round_trips(args.hooks)
    shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    rows = [
        (f"`corral shell` start → first prompt ready, p50 of {args.repeat}", f"{p50(ready):.2f} s"),
        (
            f"hook round trip through the forwarder, in the sandbox, p50 / p95 of {args.hooks}",
            f"{p50(forwarded):.1f} / {p95(forwarded):.1f} ms",
        ),
        (
            "the same host work called directly (decision + durable audit), p50 / p95",
            f"{p50(direct):.1f} / {p95(direct):.1f} ms",
        ),
        ("(a) per tool call, headless `corral run`, SDK hooks", f"{p50(run_calls):.0f} ms"),
        ("(b) per tool call, `corral shell`, forwarded hooks", f"{p50(shell_calls):.0f} ms"),
        ("(c) per tool call, the same session without hooks", f"{p50(bare_calls):.0f} ms"),
        (
            "b − c: added per call by the forwarded hooks (pre + post)",
            f"{p50(shell_calls) - p50(bare_calls):.0f} ms",
        ),
        ("c − a: the interactive CLI over the headless one", f"{p50(bare_calls) - p50(run_calls):.0f} ms"),
    ]
    print(f"load average at the end: {load:.1f}\n\n| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
