"""OpenTelemetry export: what it adds to a run, as a ratio against the same run with export off.

Both sides play the 50-Bash-call playbook of `bench/run_overhead.py` with `corral run --playbook`, in
the same bench run, interleaved over rounds: (a) with OTEL_EXPORTER_OTLP_ENDPOINT pointing at an
OTLP/HTTP receiver on loopback in this process, (b) without it. Prints the p50 wall time and the p50
CPU time (user + system) of the `corral run` process for each side, their ratios a/b, and the spans
each exported run delivered.
Run: `python bench/telemetry.py [--repeat N]`.
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ensure_images(docker_client(), DEFAULT_CLAUDE_CODE, DEFAULT_IMAGE, progress=print)
    work = Path(tempfile.mkdtemp(prefix="bench-otel-"))
    playbook = work / "fifty.yaml"
    playbook.write_text(playbook_text())
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    spans: list[int] = []
    with otlp_receiver() as receiver:
        rx: Receiver = receiver
        for i in range(args.repeat):  # interleaved, so drift in machine load hits both sides alike
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
    print(f"\n### OpenTelemetry export ({CALLS} Bash calls, {args.repeat} rounds)\n")
    print("| measure | export on (a) | export off (b) | ratio a/b |\n|---|---|---|---|")
    print(f"| wall time of `corral run`, p50 | {wall_a:.2f} s | {wall_b:.2f} s | {wall_a / wall_b:.3f} |")
    cpu = f"| {cpu_a:.2f} s | {cpu_b:.2f} s | {cpu_a / cpu_b:.3f} |"
    print(f"| CPU time of `corral run` (user + sys), p50 {cpu}")
    print(f"| spans exported per run | {statistics.median(spans):.0f} | 0 | |")


if __name__ == "__main__":
    main()
