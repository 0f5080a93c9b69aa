"""Gateway overhead: tools/call through the gateway against the same upstream called directly.

    CORRAL_TEST_NPM_DIR=/var/tmp/corral-services/npm /work/venv/bin/python bench/gateway.py [--calls 500]

Upstream: @modelcontextprotocol/server-everything over stdio, tool `echo` (trivial). Direct: the `mcp`
SDK client on its own stdio session. Through the gateway: the same SDK client over the run's unix socket
(streamable HTTP, JSON responses), the gateway then calling its pooled stdio session. Measured in one run:
sequential latency p50/p99 and the added p50/p99, calls/s sequential and with 8 concurrent callers, with a
1-rule and a 200-rule policy (199 constrained rules that match `echo` and fail, then one that passes:
the worst case for evaluation). The audit sink is in memory, so fsync cost of the real audit log is excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx2
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from corral.events import Event
from corral.gateway.config import GatewayFileConfig, UpstreamConfig
from corral.gateway.run import RunGateway, RunGatewaySpec


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Any, *, durable: bool = False) -> Any:
        self.events.append(event)
        return event

    def register_secret(self, name: str, value: str) -> None:
        pass


def entry() -> Path:
    npm = os.environ.get("CORRAL_TEST_NPM_DIR")
    if not npm:
        sys.exit("set CORRAL_TEST_NPM_DIR (see .ci/services.sh)")
    return Path(npm) / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(
    session: ClientSession, tool: str, calls: int, concurrency: int
) -> tuple[list[float], float]:
    for _ in range(30):  # warm-up
        await session.call_tool(tool, {"message": "warm"})
    latencies: list[float] = []
    started = time.perf_counter()
    if concurrency == 1:
        for i in range(calls):
            t0 = time.perf_counter()
            result = await session.call_tool(tool, {"message": f"m{i}"})
            latencies.append((time.perf_counter() - t0) * 1000)
            assert not result.is_error, result
    else:
        per = calls // concurrency

        async def worker(w: int) -> None:
            for i in range(per):
                t0 = time.perf_counter()
                result = await session.call_tool(tool, {"message": f"w{w}-{i}"})
                latencies.append((time.perf_counter() - t0) * 1000)
                assert not result.is_error, result

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, len(latencies) / (time.perf_counter() - started)


Runner = Callable[[ClientSession], Awaitable[None]]


async def direct(run: Runner) -> None:
    params = StdioServerParameters(command="node", args=[str(entry()), "stdio"])
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await run(session)


async def through_gateway(socket_path: Path, token: str, run: Runner) -> None:
    transport = httpx2.AsyncHTTPTransport(uds=str(socket_path))
    async with (
        httpx2.AsyncClient(
            transport=transport, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as http,
        streamable_http_client("http://localhost/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.list_tools()
        await run(session)


def serve(socket_path: Path, rules: int, transport: str) -> None:
    """Child-process mode: the gateway gets its own interpreter, as in a run, where the caller is Claude
    Code in the container (in one process the client and the gateway would fight over the GIL)."""
    config = GatewayFileConfig(
        upstreams={"everything": UpstreamConfig(command="node", args=[str(entry()), "stdio"])}
    )
    grants = [f'everything.echo(message == "never-{i}")' for i in range(rules - 1)] + ["everything.echo"]
    sink = ListSink()
    spec = RunGatewaySpec(
        "bench", grants, socket_path, config=config, transport="sdk" if transport == "sdk" else "lean"
    )
    handle = RunGateway.start(spec, sink)
    print(handle.token, flush=True)
    cpu_before = time.process_time()  # this process only: the node upstream is not counted
    sys.stdin.read()  # until the parent closes our stdin
    cpu = time.process_time() - cpu_before
    handle.stop()
    calls = sum(1 for e in sink.events if e.kind == "gateway.call")
    print(calls, cpu, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rules", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="lean", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.rules, args.transport)
        return
    results: dict[str, dict[str, Any]] = {}

    def recorder(label: str, tool: str) -> Runner:
        async def run(session: ClientSession) -> None:
            seq, seq_rate = await measure(session, tool, args.calls, 1)
            _conc, conc_rate = await measure(session, tool, args.calls, 8)
            results[label] = {
                "p50": pct(seq, 50),
                "p99": pct(seq, 99),
                "mean": statistics.mean(seq),
                "rate": seq_rate,
                "rate8": conc_rate,
            }

        return run

    asyncio.run(direct(recorder("direct", "echo")))
    paths = (
        ("gateway, 1 rule", 1, "lean"),
        ("gateway, 200 rules", 200, "lean"),
        ("gateway sdk, 1 rule", 1, "sdk"),
    )
    for label, rules, transport in paths:
        sock = Path(tempfile.mkdtemp(prefix="cgwb-", dir="/tmp")) / "gateway.sock"
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(sock), "--rules", str(rules), "--transport", transport],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            token = child.stdout.readline().strip()
            asyncio.run(through_gateway(sock, token, recorder(label, "everything_echo")))
        finally:
            child.stdin.close()
            audited_text, cpu_text = (child.stdout.readline() or "0 0").split()
            child.wait(30)
        audited = int(audited_text)
        assert audited >= 2 * args.calls, f"the gateway audited {audited} calls"
        results[label]["cpu_ms"] = float(cpu_text) / audited * 1000

    core = policy_cost()
    base = results["direct"]
    print(
        f"tools/call on server-everything `echo`: {args.calls} calls sequential, {args.calls} with 8 callers"
    )
    print(
        f"{'path':<22}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}{'+p99 ms':>9}{'calls/s':>9}{'x8 calls/s':>12}"
    )
    for label, r in results.items():
        print(
            f"{label:<22}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['p50'] - base['p50']:>9.2f}"
            f"{r['p99'] - base['p99']:>9.2f}{r['rate']:>9.0f}{r['rate8']:>12.0f}"
        )
    for label in ("gateway, 1 rule", "gateway, 200 rules", "gateway sdk, 1 rule"):
        print(f"gateway process CPU per call, {label}: {results[label]['cpu_ms']:.2f} ms")
    for label in ("gateway, 1 rule", "gateway, 200 rules"):
        print(
            f"ratio {label} / direct: p50 {results[label]['p50'] / base['p50']:.2f}x, "
            f"calls/s {results[label]['rate'] / base['rate']:.2f}x"
        )
    print(
        "200-rule policy vs 1-rule, added p50 end to end: "
        f"{results['gateway, 200 rules']['p50'] - results['gateway, 1 rule']['p50']:.3f} ms"
    )
    print(
        f"policy decision alone (worst case, 200 rules): {core['200']:.1f} us; 1 rule: {core['1']:.1f} us; "
        f"ratio {core['200'] / core['1']:.1f}x"
    )


def policy_cost() -> dict[str, float]:
    """Microseconds per `Policy.decide` on the same tool, outside any transport."""
    import mcp_types as types

    from corral.gateway.catalog import Catalog
    from corral.gateway.policy import compile_policy

    echo = types.Tool(
        name="echo", input_schema={"type": "object", "properties": {"message": {"type": "string"}}}
    )
    catalog = Catalog.build({"everything": [echo]}, {}, {})
    entry = catalog.get("everything.echo")
    out = {}
    for rules in (1, 200):
        grants = [f'everything.echo(message == "never-{i}")' for i in range(rules - 1)] + ["everything.echo"]
        policy = compile_policy(grants, catalog)
        started = time.perf_counter()
        for _ in range(2000):
            assert policy.decide("everything.echo", entry, {"message": "hi"}).allowed
        out[str(rules)] = (time.perf_counter() - started) / 2000 * 1e6
    return out


if __name__ == "__main__":
    main()
