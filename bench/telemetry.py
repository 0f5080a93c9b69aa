"""OpenTelemetry export: what it adds to a run, as a ratio against the same run with export off.

Both sides play the 50-Bash-call playbook of `bench/run_overhead.py` with `corral run --playbook`, in
the same bench run, interleaved over rounds: (a) with OTEL_EXPORTER_OTLP_ENDPOINT pointing at an
OTLP/HTTP receiver on loopback in this process, (b) without it. Prints the p50 wall time and the p50
CPU time (user + system) of the `corral run` process for each side, their ratios a/b, and the spans
each exported run delivered. Then, in-process and without Docker, the cost of one audited tool call
(ToolCall, ToolResult, ShellCommand through `RunRecorder.emit`, as the hooks emit them) with the
export on against off.
Run: `python bench/telemetry.py [--repeat N] [--emit-only]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run_overhead import CALLS, clean_env, make_repo, playbook_text
from corral.config import DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE
from corral.sandbox.images import docker_client, ensure_images
from tests.telemetry.receiver import Receiver, otlp_receiver


def run_once(playbook: Path, work: Path, name: str, endpoint: str | None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one `corral run`."""
    home = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    repo = make_repo(work / f"repo-{name}")
    env = clean_env(home, "runc")
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    argv = [sys.executable, "-m", "corral", "run", "bench", "--repo", str(repo), "--playbook", str(playbook)]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"corral run failed: {proc.stderr.read() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime


def emit_cost(endpoint: str | None, calls: int = 3000) -> tuple[float, float]:
    """CPU microseconds per audited tool call (three events): in the emitting thread, and in the whole
    process until the audit log has closed (span building and export included). CPU time, not wall
    time: on a shared machine the wall time of a loop this short is mostly other processes' turns."""
    from corral.audit.log import AuditLog
    from corral.events import ShellCommand, ToolCall, ToolResult
    from corral.settings import Settings

    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    if endpoint:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    home = Path(tempfile.mkdtemp(prefix="cbe", dir="/tmp"))
    audit = AuditLog.open(Settings(home=home), background=False)
    try:
        recorder = audit.for_run("bench", team="bench")
        process, thread = time.process_time(), time.thread_time()
        for i in range(calls):
            call_id = f"toolu_{i}"
            recorder.emit(ToolCall(tool_name="Bash", tool_call_id=call_id, input={"command": f"echo {i}"}))
            recorder.emit(ToolResult(tool_name="Bash", tool_call_id=call_id, output=f"{i}\n"))
            recorder.emit(
                ShellCommand(tool_call_id=call_id, command=f"echo {i}", exit_code=0, output=f"{i}\n")
            )
        thread = time.thread_time() - thread
        recorder.close()
    finally:
        audit.close()
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    process = time.process_time() - process
    return thread / calls * 1e6, process / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--emit-only", action="store_true", help="only the in-process audit emit cost")
    args = parser.parse_args()
    if not args.emit_only:
        bench_runs(args.repeat)
    bench_emits(args.repeat)


def bench_runs(repeat: int) -> None:
    ensure_images(docker_client(), DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE, progress=print)
    work = Path(tempfile.mkdtemp(prefix="bench-otel-"))
    playbook = work / "fifty.yaml"
    playbook.write_text(playbook_text())
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    spans: list[int] = []
    with otlp_receiver() as receiver:
        rx: Receiver = receiver
        for i in range(repeat):  # interleaved, so drift in machine load hits both sides alike
            before = len(rx.spans)
            on.append(run_once(playbook, work, f"on-{i}", rx.url))
            spans.append(len(rx.spans) - before)
            off.append(run_once(playbook, work, f"off-{i}", None))
            print(
                f"  round {i + 1}: export on {on[-1][0]:.2f}s wall {on[-1][1]:.2f}s cpu ({spans[-1]} spans)  "
                f"off {off[-1][0]:.2f}s wall {off[-1][1]:.2f}s cpu  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    wall_a, wall_b = statistics.median(r[0] for r in on), statistics.median(r[0] for r in off)
    cpu_a, cpu_b = statistics.median(r[1] for r in on), statistics.median(r[1] for r in off)
    print(f"\n### OpenTelemetry export ({CALLS} Bash calls, {repeat} rounds)\n")
    print("| measure | export on (a) | export off (b) | ratio a/b |\n|---|---|---|---|")
    print(f"| wall time of `corral run`, p50 | {wall_a:.2f} s | {wall_b:.2f} s | {wall_a / wall_b:.3f} |")
    cpu = f"| {cpu_a:.2f} s | {cpu_b:.2f} s | {cpu_a / cpu_b:.3f} |"
    print(f"| CPU time of `corral run` (user + sys), p50 {cpu}")
    print(f"| spans exported per run | {statistics.median(spans):.0f} | 0 | |")


def bench_emits(repeat: int) -> None:
    with otlp_receiver() as rx:
        costs_on, costs_off = [], []
        for _ in range(repeat):
            costs_off.append(emit_cost(None))
            costs_on.append(emit_cost(rx.url))
        exported = len(rx.spans)
    print("\n| measure | export on (a) | export off (b) | ratio a/b |\n|---|---|---|---|")
    for index, what in enumerate(("the emitting thread", "the whole process, until closed")):
        a = statistics.median(c[index] for c in costs_on)
        b = statistics.median(c[index] for c in costs_off)
        print(
            f"| CPU per audited tool call (3 events), {what}, p50 | {a:.0f} µs | {b:.0f} µs | {a / b:.2f} |"
        )
    print(f"| spans received from the in-process recordings | {exported} | 0 | |")


if __name__ == "__main__":
    main()
