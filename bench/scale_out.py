"""Scale-out throughput: runs per minute through 1 and through 3 `corral worker` hosts, as a ratio,
and the scheduling latency from a run's submission to the start of its agent.

Each arm starts its own fleet (a fresh shared queue on one Temporal dev server), with hosts that each
take `--max-runs` runs at once, submits `--runs` runs of a one-turn scripted playbook at once, and
waits for every run to rest. All hosts share this machine's cores and Docker Engine, so the ratio
says how much the fleet itself costs and overlaps here, not what more machines would give.
Run: `python bench/scale_out.py [--runs 6] [--max-runs 2]` (needs Docker and the agent image; uses
CORRAL_TEST_TEMPORAL_ADDRESS when set, else starts `temporal server start-dev` from this venv).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAYBOOK = """
turns:
  - tool_use:
      - {name: Write, input: {file_path: "{workspace}/note.txt", content: "hello\\n"}}
  - text: Wrote the note.
"""
CONFIG = '[project]\nname = "bench"\nbase_branch = "main"\n\n[checks]\ncommand = "true"\n'
BIN = Path(sys.executable).parent


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir(parents=True)
    (repo / "corral.toml").write_text(CONFIG)
    (repo / "README.md").write_text("# bench\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init")
    return repo


def temporal_server() -> tuple[str, subprocess.Popen[bytes] | None]:
    if os.environ.get("CORRAL_TEST_TEMPORAL_ADDRESS"):
        return os.environ["CORRAL_TEST_TEMPORAL_ADDRESS"], None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(BIN / "temporal"),
            "server",
            "start-dev",
            "--headless",
            "--port",
            str(port),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(240):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}", proc
        time.sleep(0.5)
    raise SystemExit("the Temporal dev server did not start")


def arm(address: str, hosts: int, runs: int, max_runs: int) -> dict[str, float]:
    from corral.fleet import FleetTarget
    from corral.fleet.client import blocking, connect
    from corral.fleet.client import hosts as list_hosts
    from corral.runs import RunOrchestrator, RunRequest
    from corral.services import Services
    from corral.settings import Settings
    from corral.state.machine import Phase

    root = Path(tempfile.mkdtemp(prefix="bso", dir="/tmp"))
    queue = f"bench{secrets.token_hex(3)}"
    env = {
        "CORRAL_TEMPORAL_ADDRESS": address,
        "CORRAL_TEMPORAL_QUEUE": queue,
        "CORRAL_STATE_URL": f"sqlite:///{root}/state.db",
        "CORRAL_AUDIT_URL": f"sqlite:///{root}/audit.db",
        "CORRAL_FORGE_DIR": str(root / "forge"),
        "CORRAL_HOME": str(root / "submitter"),
        "ANTHROPIC_API_KEY": "sk-ant-bench-canary-0000000000000000",
    }
    os.environ.update(env)
    repo = _repo(root)
    playbook = root / "playbook.yaml"
    playbook.write_text(PLAYBOOK)
    workers = []
    for i in range(hosts):
        home = root / f"w{i}"
        workers.append(
            subprocess.Popen(
                [str(BIN / "corral"), "worker", "--host-id", f"w{i}", "--max-runs", str(max_runs)],
                env={**os.environ, "CORRAL_HOME": str(home)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    target = FleetTarget(address, "default", "bench", queue)

    async def registered() -> int:
        return len(await list_hosts(await connect(target), queue))

    while blocking(registered()) < hosts:
        time.sleep(0.5)
    services = Services(Settings())
    try:
        started = time.monotonic()
        ids = [
            RunOrchestrator(services).submit(RunRequest(task=f"note {i}", repo=repo, playbook=playbook))
            for i in range(runs)
        ]
        state = services.state()
        while not all(state.get_run(r).phase in (Phase.AWAITING_APPROVAL, Phase.FAILED) for r in ids):
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        records = [state.get_run(r) for r in ids]
        failed = [r.run_id for r in records if r.phase != Phase.AWAITING_APPROVAL]
        if failed:
            raise SystemExit(f"runs failed: {[(r.run_id, r.failure_reason) for r in records]}")
        latencies = [(r.started_at - r.created_at).total_seconds() for r in records if r.started_at]
    finally:
        services.close()
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(120)
    return {
        "runs_per_minute": runs / (elapsed / 60),
        "elapsed_s": elapsed,
        "latency_p50_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--max-runs", type=int, default=2)
    args = parser.parse_args()
    address, server = temporal_server()
    try:
        load = os.getloadavg()[0]
        one = arm(address, 1, args.runs, args.max_runs)
        three = arm(address, 3, args.runs, args.max_runs)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
    print(
        f"load average at start: {load:.1f} on {os.cpu_count()} cores; "
        f"{args.runs} runs, --max-runs {args.max_runs}"
    )
    for name, result in (("1 worker ", one), ("3 workers", three)):
        print(
            f"{name}: {result['runs_per_minute']:.2f} runs/min ({result['elapsed_s']:.1f} s); "
            f"submission -> agent start p50 {result['latency_p50_s']:.2f} s, "
            f"max {result['latency_max_s']:.2f} s"
        )
    print(f"throughput ratio 3/1: {three['runs_per_minute'] / one['runs_per_minute']:.2f}")


if __name__ == "__main__":
    main()
