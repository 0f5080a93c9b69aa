"""Exact replay: did our harness drift?

`replay_run` re-drives a recorded run from its base commit, task and the repository's config, with the
proxy playing the run's cassette (never a model) and the gateway answering non-read-only tools from the
recording. `compare` then walks both audit chains step by step (a step is one tool call: its name,
input, decision and result) and names the first divergence. The final diffs are compared by tree.

Outputs are compared after masking what differs between two faithful runs by construction: the run
ids (in branch names) and durations such as pytest's "in 0.03s". Anything else that differs is a
divergence: a changed image or CLI shows in what a tool printed or in Claude Code's init report, a
changed policy in a decision, a non-deterministic tool in its output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from corral.audit.observed import Observer
from corral.events import (
    AgentInit,
    AnyEvent,
    CommitMade,
    RunCreated,
    RunFinished,
    ToolCall,
    ToolDenied,
    ToolResult,
)
from corral.model.cassette import Cassette
from corral.services import Services
from corral.state.models import RunRecord
from corral.workspace import tree_of

_E = TypeVar("_E")
_DURATION = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s)\b")
_SHOWN = 300


@dataclass(frozen=True)
class Step:
    """One tool call as the audit log has it."""

    index: int
    tool: str
    input: dict[str, Any]
    output: str = ""
    is_error: bool = False
    denied: str = ""


@dataclass(frozen=True)
class Divergence:
    step: int
    """1-based tool-call step; 0 is Claude Code's init (version and tool surface); -1 the final diff."""
    what: str
    expected: str
    actual: str

    def describe(self) -> str:
        where = {0: "at init", -1: "in the final diff"}.get(self.step, f"at step {self.step}")
        return f"{where}: {self.what}: expected {self.expected!r}, got {self.actual!r}"


@dataclass
class ReplayReport:
    run_id: str
    replay_id: str
    steps: int
    replayed_steps: int
    identical: bool
    diff_identical: bool
    divergence: Divergence | None
    notes: list[str] = field(default_factory=list)
    original_ms: int = 0
    replay_ms: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "replay_id": self.replay_id,
            "identical": self.identical,
            "steps": self.steps,
            "replayed_steps": self.replayed_steps,
            "diff_identical": self.diff_identical,
            "divergence": None
            if self.divergence is None
            else {**self.divergence.__dict__, "description": self.divergence.describe()},
            "notes": self.notes,
            "original_ms": self.original_ms,
            "replay_ms": self.replay_ms,
        }


def steps_of(events: Sequence[AnyEvent]) -> list[Step]:
    calls: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for event in events:
        if isinstance(event, ToolCall):
            if event.tool_call_id not in calls:
                order.append(event.tool_call_id)
            calls[event.tool_call_id] = {"tool": event.tool_name, "input": event.input}
        elif isinstance(event, ToolResult) and event.tool_call_id in calls:
            calls[event.tool_call_id].update(output=event.output, is_error=event.is_error)
        elif isinstance(event, ToolDenied):
            if event.tool_call_id not in calls:
                order.append(event.tool_call_id)
                calls[event.tool_call_id] = {"tool": event.tool_name, "input": {}}
            calls[event.tool_call_id]["denied"] = event.rule
    return [Step(index=i + 1, **calls[call_id]) for i, call_id in enumerate(order)]


def _mask(text: str, run_ids: Sequence[str]) -> str:
    for run_id in run_ids:
        if run_id:
            text = text.replace(run_id, "<run>")
    return _DURATION.sub("<t>", text)


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def first_step_divergence(
    expected: Sequence[Step], actual: Sequence[Step], run_ids: Sequence[str]
) -> Divergence | None:
    for want, got in zip(expected, actual, strict=False):
        n = want.index
        if got.tool != want.tool:
            return Divergence(n, "tool", want.tool, got.tool)
        if got.input != want.input:
            return Divergence(n, f"{want.tool} input", _short(want.input), _short(got.input))
        if got.denied != want.denied:
            return Divergence(n, f"{want.tool} decision", want.denied or "allowed", got.denied or "allowed")
        if got.is_error != want.is_error:
            return Divergence(n, f"{want.tool} error flag", str(want.is_error), str(got.is_error))
        if _mask(got.output, run_ids) != _mask(want.output, run_ids):
            return Divergence(n, f"{want.tool} result", _short(want.output), _short(got.output))
    if len(actual) < len(expected):
        missing = expected[len(actual)]
        return Divergence(missing.index, "tool call", f"{missing.tool} {_short(missing.input)}", "no call")
    if len(actual) > len(expected):
        extra = actual[len(expected)]
        return Divergence(extra.index, "tool call", "no call", f"{extra.tool} {_short(extra.input)}")
    return None


def _init_divergence(original: Sequence[AnyEvent], replay: Sequence[AnyEvent]) -> Divergence | None:
    want = next((e for e in original if isinstance(e, AgentInit)), None)
    got = next((e for e in replay if isinstance(e, AgentInit)), None)
    if want is None or got is None:
        return None  # a run recorded before init reports were audited has nothing to compare
    if want.claude_code_version != got.claude_code_version:
        return Divergence(0, "Claude Code version", want.claude_code_version, got.claude_code_version)
    if want.tool_surface_hash != got.tool_surface_hash:
        added = sorted(set(got.tools + got.gateway_tools) - set(want.tools + want.gateway_tools))
        dropped = sorted(set(want.tools + want.gateway_tools) - set(got.tools + got.gateway_tools))
        return Divergence(
            0, "tool surface", want.tool_surface_hash, f"{got.tool_surface_hash} (+{added} -{dropped})"
        )
    return None


def _of(events: Sequence[AnyEvent], kind: type[_E]) -> list[_E]:
    return [e for e in events if isinstance(e, kind)]


def compare(
    original: RunRecord,
    original_events: Sequence[AnyEvent],
    replay: RunRecord,
    replay_events: Sequence[AnyEvent],
) -> ReplayReport:
    ids = (original.run_id, replay.run_id)
    want, got = steps_of(original_events), steps_of(replay_events)
    divergence = _init_divergence(original_events, replay_events) or first_step_divergence(want, got, ids)
    repo = Path(original.repo)
    want_tree = tree_of(repo, str(original.meta.get("head_commit") or original.base_commit))
    got_tree = tree_of(repo, str(replay.meta.get("head_commit") or replay.base_commit))
    diff_identical = want_tree is not None and want_tree == got_tree
    if divergence is None and not diff_identical:
        divergence = Divergence(-1, "tree", str(want_tree), str(got_tree))
    notes: list[str] = []
    created = _of(original_events, RunCreated)
    replayed = _of(replay_events, RunCreated)
    if created and replayed and created[0].config_hash != replayed[0].config_hash:
        notes.append(
            f"the config differs from the recording's ({created[0].config_hash} -> {replayed[0].config_hash})"
        )
    if original.preference_ids != replay.preference_ids:
        notes.append(f"preferences injected differ: {original.preference_ids} -> {replay.preference_ids}")
    if original.checks_passed != replay.checks_passed:
        notes.append(f"checks passed: {original.checks_passed} -> {replay.checks_passed}")
    commits = _of(replay_events, CommitMade)
    if not commits and _of(original_events, CommitMade):
        notes.append("the replay made no commit")
    return ReplayReport(
        run_id=original.run_id,
        replay_id=replay.run_id,
        steps=len(want),
        replayed_steps=len(got),
        identical=divergence is None,
        diff_identical=diff_identical,
        divergence=divergence,
        notes=notes,
        original_ms=sum(e.duration_ms for e in _of(original_events, RunFinished)),
        replay_ms=sum(e.duration_ms for e in _of(replay_events, RunFinished)),
    )


def replay_run(
    services: Services,
    run_id: str,
    *,
    config_path: Path | None = None,
    observers: list[Observer] | None = None,
) -> ReplayReport:
    """Replay a recorded run (found in the services' team) and compare it with its recording."""
    from corral.runs import RunOrchestrator, RunRequest

    original = services.find_run(run_id)
    original_events = services.audit().read(original.run_id)
    cassette = Cassette.from_events(original_events, original.run_id)
    request = RunRequest(
        task=original.task,
        repo=Path(original.repo),
        config_path=config_path,
        mode="replay",
        base_commit=original.base_commit,
        meta={"replay_of": original.run_id},
        cassette=cassette,
        preference_ids=tuple(original.preference_ids),
    )
    orchestrator = RunOrchestrator(services, observers)
    replay_id = orchestrator.run(request)
    replay = orchestrator.record(replay_id)
    replay_events = orchestrator.audit().read(replay_id)
    return compare(original, original_events, replay, replay_events)
