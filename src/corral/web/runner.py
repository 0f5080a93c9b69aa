"""Runs submitted to the server execute in its process, each in a worker thread.

Each run gets `Services.for_run()` of the server's Services: the server's state stores and audit log,
open since it started, and a Docker client of the run's own.

The API answers only once the run is recorded (its first audited event is `run.created`, written
after the run's row), so an accepted run survives a restart: the next start's gc marks a run whose
driver died as failed, with the reason, and removes its container.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from corral.errors import CorralError, RunError

if TYPE_CHECKING:
    from corral.events import Event
    from corral.services import Services

ACCEPT_TIMEOUT = 120.0


@dataclass
class _Submission:
    recorded: threading.Event = field(default_factory=threading.Event)
    run_id: str = ""
    error: CorralError | None = None


class Runner:
    def __init__(self, services: Services) -> None:
        self._services = services
        self.threads: list[threading.Thread] = []

    def submit(self, repo: str, task: str, playbook: str | None, requester: str) -> str:
        from corral.runs import RunOrchestrator, RunRequest

        sub = _Submission()

        def observe(event: Event) -> None:
            if not sub.run_id and event.run_id:
                sub.run_id = event.run_id
                sub.recorded.set()

        def work() -> None:
            # The server's stores and warm pool; the run's own Docker client, closed with it.
            services = self._services.for_run()
            try:
                request = RunRequest(
                    task=task, repo=Path(repo), playbook=Path(playbook) if playbook else None
                )
                RunOrchestrator(services, [observe]).run(request)
            except CorralError as exc:
                sub.error = exc
            except Exception as exc:  # recorded on the run by the orchestrator; the thread must not die loud
                sub.error = RunError(f"internal error: {type(exc).__name__}: {exc}")
            finally:
                sub.recorded.set()
                services.close()

        thread = threading.Thread(target=work, name=f"corral-run-{len(self.threads)}", daemon=True)
        self.threads.append(thread)
        thread.start()
        if not sub.recorded.wait(ACCEPT_TIMEOUT):
            raise RunError("the run was not recorded in time", hint="see the server's log")
        if sub.run_id:
            return sub.run_id
        raise sub.error or RunError("the run ended before it was recorded")
