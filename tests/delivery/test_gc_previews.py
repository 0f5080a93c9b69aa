"""`corral gc` stops the local preview servers of runs that have ended (nobody will promote them; a
promoted build stays served as production), keeps those a human may still promote, and leaves the
deployments of runs it does not know (another team's) alone."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from corral.deploy.local import LocalDeploy
from corral.gc import collect
from corral.settings import Settings
from corral.state.db import StateStore
from corral.state.machine import Phase

TO_STAGED = [Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL, Phase.APPROVED]
TO_STAGED += [Phase.MERGED, Phase.STAGED]


def _served(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "index.html", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _builder(commit: str, dest: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "index.html").write_text(f"build of {commit}\n")


def test_gc_stops_the_previews_of_ended_runs_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    state = StateStore.open(f"sqlite:///{tmp_path}/state.db", settings, team="default")
    deploy = LocalDeploy(settings.home / "deploy", _builder)
    try:
        state.ensure_project("shop", repo="/nonexistent/shop")
        urls: dict[str, str] = {}
        for name, ending in (("waits", None), ("promoted", Phase.PROMOTED), ("failed", Phase.FAILED)):
            run = state.create_run(project="shop", task=name, repo="/nonexistent/shop", base_commit="0" * 40)
            for step in TO_STAGED:
                state.transition(run.run_id, step)
            if ending is not None:
                state.transition(run.run_id, ending, "test")
            dep = deploy.stage_commit(run_id=run.run_id, project="shop", commit=name, branch="b")
            urls[name] = dep.preview_url
        foreign = deploy.stage_commit(run_id="r-of-another-team", project="x", commit="y", branch="b")
        assert all(_served(url) for url in [*urls.values(), foreign.preview_url])

        report = collect(settings, state, None)
        stopped = {d.run_id for d in deploy.list() if d.id in report.preview_servers}
        assert stopped == {r.run_id for r in state.list_runs() if r.task in ("promoted", "failed")}
        assert not _served(urls["promoted"]) and not _served(urls["failed"])
        assert _served(urls["waits"]) and _served(foreign.preview_url)  # promotable; not this team's
        assert collect(settings, state, None).preview_servers == []  # nothing left to stop
    finally:
        for dep in deploy.list():
            port_file = settings.home / "deploy" / "builds" / dep.id / "server.port"
            port_file.unlink(missing_ok=True)  # each server ends within a second of its port file
        state.close()
