"""corral server: run page with 5,000 events, runs list over 10,000 runs, audit→SSE latency.

Real SQLite state and audit stores under a temporary CORRAL_HOME. Page times are measured around an
in-process request (FastAPI's TestClient: the app's whole work, no network); the SSE latency over
real uvicorn and a real HTTP client, from `emit` returning to the frame's arrival.
The baseline, in the same run, is the page of a run with no events (the same app, auth, state
queries and template, nothing of the timeline), requested in turn with the others: the run pages are
also given as a ratio to it, which the machine's load moves less than the milliseconds.
Run: `python bench/server.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

EVENTS = 5_000
RUNS = 10_000


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    os.environ["CORRAL_HOME"] = tempfile.mkdtemp(prefix="cb", dir="/tmp")
    for name in ("CORRAL_STATE_URL", "CORRAL_AUDIT_URL"):
        os.environ.pop(name, None)

    import httpx
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from corral import events as ev
    from corral.services import Services
    from corral.serving import BackgroundServer
    from corral.settings import load_settings
    from corral.state.ids import new_run_id
    from corral.state.schema import runs
    from corral.state.users import add_user, new_token
    from corral.web.app import create_app

    services = Services(load_settings())
    state = services.state()
    state.ensure_project("shop", repo="/nonexistent")
    big = state.create_run(
        project="shop", task="5,000 events", repo="/nonexistent", base_commit="0" * 40
    ).run_id
    now = datetime.now(UTC)
    rows = []
    for i in range(RUNS - 1):
        at = now - timedelta(seconds=i + 1)
        rows.append(
            {
                "run_id": new_run_id(at.timestamp()),
                "team": state.team,
                "project": "shop",
                "task": f"task {i}",
                "repo": "/nonexistent",
                "base_commit": "0" * 40,
                "branch": f"corral/b{i}",
                "phase": "failed",
                "version": 1,
                "failure_reason": "",
                "model": "m",
                "small_model": "s",
                "created_at": at,
                "updated_at": at,
                "started_at": at,
                "finished_at": at,
                "cost_usd": 0.01,
                "input_tokens": 1,
                "output_tokens": 1,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "checks": None,
                "checks_passed": None,
                "result": None,
                "diffstat": "",
                "container_id": "",
                "pid": None,
                "preference_ids": [],
                "meta": {},
            }
        )
    with state.transaction(write=True) as conn:
        conn.execute(sa.insert(runs), rows)
    recorder = services.audit().for_run(big)
    for i in range(EVENTS // 2):
        call = {"gen_ai.tool.name": "Bash", "gen_ai.tool.call.id": f"t{i}"}
        recorder.emit(ev.ToolCall.model_validate({**call, "input": {"command": f"echo {i}"}}))
        recorder.emit(ev.ToolResult.model_validate({**call, "output": f"{i}\n"}))
    recorder.close()
    empty = state.create_run(project="shop", task="no events", repo="/nonexistent", base_commit="0" * 40)
    add_user(state, "bench", "viewer", "")
    headers = {"Authorization": f"Bearer {new_token(state, 'bench')}"}

    app = create_app(services, secret="bench")
    results: dict[str, float] = {}
    with TestClient(app) as client:
        pages = (
            ("run_page_no_events_ms", f"/runs/{empty.run_id}"),
            ("run_page_5000_events_ms", f"/runs/{big}"),
            ("run_page_5000_events_last_page_ms", f"/runs/{big}?after={EVENTS - 200}"),
            ("runs_list_10000_runs_ms", "/runs"),
        )
        samples: dict[str, list[float]] = {name: [] for name, _ in pages}
        for _name, path in pages:
            assert client.get(path, headers=headers).status_code == 200
        for _ in range(args.repeat):  # interleaved, so a change in the machine's load hits every page
            for name, path in pages:
                start = time.perf_counter()
                reply = client.get(path, headers=headers)
                samples[name].append(time.perf_counter() - start)
                assert reply.status_code == 200
        for name, _ in pages:
            results[name] = round(_p50(samples[name]), 1)
        for name in ("run_page_5000_events_ms", "run_page_5000_events_last_page_ms"):
            ratio = name.replace("_ms", "_over_baseline")
            results[ratio] = round(results[name] / results["run_page_no_events_ms"], 2)

    live = state.create_run(project="shop", task="live", repo="/nonexistent", base_commit="0" * 40).run_id
    server = BackgroundServer(app, name="bench server")
    server.start(tcp=("127.0.0.1", 0))
    latencies = []
    recorder = services.audit().for_run(live)
    try:
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "GET", f"http://127.0.0.1:{server.port}/api/runs/{live}/events", headers=headers
            ) as stream,
        ):
            lines = stream.iter_lines()
            time.sleep(0.5)
            for i in range(args.repeat):
                recorder.emit(ev.AgentStopped(turns=i, reason="bench"))
                sent = time.perf_counter()
                for line in lines:
                    if line.startswith("id: "):
                        latencies.append(time.perf_counter() - sent)
                        break
                time.sleep(0.05)
    finally:
        recorder.close()
        server.stop()
    results["audit_to_sse_ms"] = round(_p50(latencies), 1)
    services.close()
    results["load_average_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
