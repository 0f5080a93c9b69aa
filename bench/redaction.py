"""Redaction cost on the hot path (issue 14): what 0, 10 and 100 registered secrets add per event.

    .venv/bin/python bench/redaction.py [--events 3000]

The recorder redacts every event before it is hashed and spooled, so this is the part of the hook's
and the proxy's added latency that grows with the number of secrets. Two event shapes, as the run
emits them: a PreToolUse `tool.call` (a Bash command of about 300 bytes), and the proxy's
`model.response` for one turn (4 KiB of text and a tool use). Each secret is a random 40-character
token, so each adds its raw, URL, base64, aligned-base64 and hex forms to the pattern. Prints a
markdown table of p50 and p99 per event, in microseconds.
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any

from corral.audit.redact import Redactor
from corral.events import ModelResponse, ToolCall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hook_event(i: int) -> dict[str, Any]:
    command = f"cd /workspace && pytest -q tests/test_{i}.py -k 'not slow' --maxfail=1 " + "x" * 200
    event = ToolCall(tool_name="Bash", tool_call_id=f"toolu_{i:08d}", input={"command": command})
    return event.model_dump(mode="json", by_alias=True)


def proxy_event(i: int) -> dict[str, Any]:
    text = (f"Turn {i}: the failing test asserts the total after discount. " * 70)[:4096]
    event = ModelResponse(
        request_model="claude-sonnet-4-5-20250929",
        exchange_id=f"{i:032x}",
        text=text,
        input_tokens=12000,
        output_tokens=300,
        tool_uses=[{"id": f"toolu_{i}", "name": "Bash", "input": {"command": "pytest -q"}}],
    )
    return event.model_dump(mode="json", by_alias=True)


def measure(redactor: Redactor, build: Any, n: int) -> tuple[float, float]:
    events = [build(i) for i in range(n + 200)]
    times: list[float] = []
    for i, event in enumerate(events):
        t0 = time.perf_counter()
        redactor.redact(event)
        if i >= 200:  # warm-up
            times.append((time.perf_counter() - t0) * 1e6)
    return percentile(times, 0.5), percentile(times, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    print("| registered secrets | hook event p50 / p99 (µs) | proxy event p50 / p99 (µs) |")
    print("|---|---|---|")
    for count in (0, 10, 100):
        redactor = Redactor()
        for k in range(count):
            redactor.register(f"S{k}", secrets.token_urlsafe(30))
        hook = measure(redactor, hook_event, args.events)
        proxy = measure(redactor, proxy_event, args.events)
        print(f"| {count} | {hook[0]:.1f} / {hook[1]:.1f} | {proxy[0]:.1f} / {proxy[1]:.1f} |")


if __name__ == "__main__":
    main()
