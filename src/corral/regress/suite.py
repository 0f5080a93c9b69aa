"""`corral regress`: re-run the window's decided tasks with a candidate model and gate on the result.

Each task is re-run from its recorded base commit, in a fresh sandbox, through the normal proxy and
gateway, as a `regress` run: it ends at `evaluated` after its checks and holds no forge or deploy
write grant, so it never opens a pull request, merges or deploys. A run that crashes or times out is
a failed epoch, never an aborted suite. Ctrl-C starts no more runs, waits for the runs in flight to
end and clean up, scores only the epochs that finished before it, and leaves a report marked partial.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from corral.config import Config, load_config
from corral.errors import ConfigError, CorralError
from corral.events import AnyEvent, CommitMade, ToolCall, ToolDenied
from corral.regress.candidates import ScriptedCandidate
from corral.regress.stats import Analysis, GateConfig, TaskOutcome, analyse
from corral.regress.tasks import RecordedTask, Window, select_tasks
from corral.services import Services
from corral.state.models import RunRecord

Progress = Callable[[str], None]
_CHANGED_LINES = re.compile(r"(\d+) (?:insertion|deletion)")


@dataclass(frozen=True)
class EpochScore:
    side: str
    epoch: int
    run_id: str
    passed: bool
    phase: str
    reason: str = ""
    checks_passed: bool | None = None
    files: tuple[str, ...] = ()
    same_files: bool | None = None
    diff_lines: int = 0
    tool_calls: int = 0
    denied: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0


@dataclass
class TaskResult:
    task: RecordedTask
    baseline: list[EpochScore] = field(default_factory=list)
    candidate: list[EpochScore] = field(default_factory=list)

    def outcome(self) -> TaskOutcome:
        return TaskOutcome(
            self.task.key,
            self.task.project,
            tuple(s.passed for s in sorted(self.baseline, key=lambda s: s.epoch)),
            tuple(s.passed for s in sorted(self.candidate, key=lambda s: s.epoch)),
        )


@dataclass(frozen=True)
class SuiteOptions:
    candidate: str
    since: timedelta = timedelta(days=7)
    project: str | None = None
    epochs: int | None = None
    """None: `[regress] epochs` of the project's corral.toml."""
    concurrency: int = 1
    rerun_baseline: bool = False
    playbooks: Path | None = None
    """A scripted candidate file (see candidates.py); None re-asks the live model."""
    baseline_playbooks: Path | None = None
    output_dir: Path | None = None
    created_by: str = ""


@dataclass
class SuiteResult:
    suite_id: str
    options: SuiteOptions
    baseline_model: str
    window: Window
    results: list[TaskResult]
    analysis: Analysis | None
    gate: GateConfig
    partial: bool = False
    wall_s: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    report_paths: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "empty" if self.analysis is None else self.analysis.verdict

    def summary(self) -> dict[str, Any]:
        return {
            "suite_id": self.suite_id,
            "candidate": self.options.candidate,
            "baseline": self.baseline_model,
            "baseline_source": "re-run" if self.options.rerun_baseline else "original runs",
            "verdict": self.verdict,
            "partial": self.partial,
            "tasks": len(self.results),
            "skipped": [{"task": k, "reason": r} for k, r in self.window.skipped],
            "analysis": asdict(self.analysis) if self.analysis else None,
            "gate": asdict(self.gate),
            "wall_s": round(self.wall_s, 3),
        }


def score_run(
    side: str, epoch: int, record: RunRecord, events: list[AnyEvent], approved: tuple[str, ...], wall_s: float
) -> EpochScore:
    files = tuple(sorted({f for e in events if isinstance(e, CommitMade) for f in e.files}))
    lines = sum(int(n) for n in _CHANGED_LINES.findall(record.diffstat))
    passed = bool(record.checks_passed) and record.phase.value not in ("failed", "rejected")
    return EpochScore(
        side=side,
        epoch=epoch,
        run_id=record.run_id,
        passed=passed,
        phase=record.phase.value,
        reason=record.failure_reason,
        checks_passed=record.checks_passed,
        files=files,
        same_files=(set(files) == set(approved)) if approved else None,
        diff_lines=lines,
        tool_calls=sum(1 for e in events if isinstance(e, ToolCall)),
        denied=sum(1 for e in events if isinstance(e, ToolDenied)),
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cost_usd=record.cost_usd,
        wall_s=wall_s,
    )


def _failed(side: str, epoch: int, reason: str, wall_s: float) -> EpochScore:
    return EpochScore(
        side=side, epoch=epoch, run_id="", passed=False, phase="failed", reason=reason, wall_s=wall_s
    )


class Suite:
    def __init__(self, services: Services, options: SuiteOptions, progress: Progress | None = None) -> None:
        self.services = services
        self.options = options
        self.progress: Progress = progress or (lambda _m: None)
        self.suite_id = "rs" + secrets.token_hex(5)

    def _config(self, window: Window) -> Config:
        if self.services.scope.config is not None:
            return self.services.scope.config
        if window.tasks:
            return load_config(Path(window.tasks[0].repo))
        return Config()

    def _files_of(self, run_id: str) -> list[str]:
        events = self.services.audit().read(run_id)
        return sorted({f for e in events if isinstance(e, CommitMade) for f in e.files})

    def _baseline_from_records(self, task: RecordedTask) -> list[EpochScore]:
        scores = []
        for epoch, record in enumerate(task.runs):
            events = self.services.audit().read(record.run_id)
            wall = record.elapsed_seconds or 0.0
            scores.append(score_run("baseline", epoch, record, events, task.approved_files, wall))
        return scores

    def _run_one(
        self, task: RecordedTask, side: str, epoch: int, model: str, script: Path | None
    ) -> EpochScore:
        from corral.runs import RunOrchestrator, RunRequest

        started = time.monotonic()
        try:
            request = RunRequest(
                task=task.task,
                repo=Path(task.repo),
                playbook=script,
                mode="regress",
                model=model,
                base_commit=task.base_commit,
                meta={"regress_suite": self.suite_id, "regress_of": task.runs[-1].run_id, "side": side},
            )
            orchestrator = RunOrchestrator(self.services)
            run_id = orchestrator.run(request)
            record = orchestrator.record(run_id)
            events = orchestrator.audit().read(run_id)
        except CorralError as exc:
            return _failed(side, epoch, exc.message, time.monotonic() - started)
        except Exception as exc:  # a crashed candidate run is a failed epoch, not an aborted suite
            return _failed(side, epoch, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        wall = time.monotonic() - started
        score = score_run(side, epoch, record, events, task.approved_files, wall)
        self.progress(
            f"{side} {model} epoch {epoch + 1}: {task.task[:60]!r} -> "
            f"{'pass' if score.passed else 'fail'} ({record.phase.value}, {wall:.1f}s)"
        )
        return score

    def run(self) -> SuiteResult:
        started = time.monotonic()
        opts = self.options
        state = self.services.state()
        since = datetime.now(UTC) - opts.since
        window = select_tasks(state, since, opts.project, self._files_of)
        config = self._config(window)
        gate = GateConfig(
            margin=config.regress.margin,
            alpha=config.regress.alpha,
            power=config.regress.power,
            min_tasks=config.regress.min_tasks,
        )
        epochs = opts.epochs or config.regress.epochs
        pin = state.current_pin(window.tasks[0].project) if window.tasks else None
        baseline_model = pin.model if pin else config.agent.model
        results = [TaskResult(task) for task in window.tasks]
        suite = SuiteResult(self.suite_id, opts, baseline_model, window, results, None, gate)
        if not results:
            suite.wall_s = time.monotonic() - started
            return suite
        candidate = ScriptedCandidate.load(opts.playbooks) if opts.playbooks else None
        if candidate is not None and candidate.model != opts.candidate:
            raise ConfigError(
                f"{opts.playbooks} plays {candidate.model}, but the suite's candidate is {opts.candidate}",
                hint="pass --candidate with the model the candidate file names",
            )
        baseline = ScriptedCandidate.load(opts.baseline_playbooks) if opts.baseline_playbooks else None
        jobs: list[tuple[TaskResult, str, int, str, ScriptedCandidate | None]] = []
        for result in results:
            jobs.extend((result, "candidate", e, opts.candidate, candidate) for e in range(epochs))
            if opts.rerun_baseline:
                jobs.extend((result, "baseline", e, baseline_model, baseline) for e in range(epochs))
            else:
                result.baseline = self._baseline_from_records(result.task)
        # Open the shared stores before the workers do, so they are opened once.
        self.services.audit()
        suite.partial = self._execute(jobs, max(1, opts.concurrency))
        suite.analysis = analyse([r.outcome() for r in results if r.candidate and r.baseline], gate)
        suite.wall_s = time.monotonic() - started
        return suite

    def _execute(
        self, jobs: list[tuple[TaskResult, str, int, str, ScriptedCandidate | None]], workers: int
    ) -> bool:
        """Run every job; True when Ctrl-C cut the suite short."""
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="corral-regress")
        futures: dict[Future[EpochScore], tuple[TaskResult, str]] = {}
        for result, side, epoch, model, scripted in jobs:
            try:
                script = scripted.playbook_for(result.task.task, epoch) if scripted else None
            except CorralError as exc:
                (result.candidate if side == "candidate" else result.baseline).append(
                    _failed(side, epoch, exc.message, 0.0)
                )
                continue
            future = pool.submit(self._run_one, result.task, side, epoch, model, script)
            futures[future] = (result, side)
        interrupted = False
        finished: set[Future[EpochScore]] = set(futures)
        try:
            wait(futures)
        except KeyboardInterrupt:
            interrupted = True
            # A terminal's Ctrl-C also reaches the runs' Claude Code processes, so a run in flight
            # ends failed for that reason alone: only epochs finished before it are scored.
            finished = {f for f in futures if f.done()}
            self.progress("interrupted: no new runs start; the runs in flight end and clean up")
        pool.shutdown(wait=True, cancel_futures=True)
        for future, (result, side) in futures.items():
            if future in finished and not future.cancelled():
                (result.candidate if side == "candidate" else result.baseline).append(future.result())
        return interrupted


def run_and_report(
    services: Services, options: SuiteOptions, directory: Path, progress: Callable[[str], None] | None = None
) -> SuiteResult:
    """`corral regress` (by hand, or fired by a schedule on a fleet host): run the suite, then write
    its report under `directory` and record it for the promotion gate when it compared anything."""
    from corral.regress.gate import record_suite
    from corral.regress.report import write_report

    suite = Suite(services, options, progress or services.progress).run()
    if suite.analysis is not None or suite.window.skipped:
        suite.report_paths = write_report(suite, directory)
        record_suite(services.state(), suite)
    return suite
