"""Project images: what a Node project's first run (with the build) and its cached second run cost.

The project is concat-map 0.0.1 from the npm registry (`npm pack`, then `npm install
--package-lock-only` for its lockfile); its checks are `npm test` after `npm ci` in the image. Three
`corral run`s play the same one-turn playbook with the scripted model:
  (a) first run: the project image does not exist, so the run builds it (docker build with network
      to Debian and npm), verifies it, then runs;
  (b) second run: the same project again, the image reused;
  (c) baseline: a project with no dependencies on the default image (checks `true`).
Prints the wall times, a/c and b/c, and the project image's size against corral/agent's.

The bench's recipe names one redundant apt package (ca-certificates, already in corral/agent) so no
image the tests built gives it a warm layer cache, and it removes its image at the end: every bench
run starts cold. Run: `python bench/images.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from corral.config import DEFAULT_CLAUDE_CODE, load_config
from corral.sandbox.images import agent_tag, docker_client, ensure_images
from corral.sandbox.project_image import recipes

PACKAGE = "concat-map@0.0.1"
PLAYBOOK = "turns:\n  - text: done\n"
CONFIG = """\
[project]
name = "bench-concat-map"
[sandbox.image]
apt = ["nodejs", "npm", "ca-certificates"]
inputs = ["package.json", "package-lock.json"]
setup = ["npm ci"]
[checks]
command = "npm test"
"""


def git_commit(root: Path) -> None:
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "i"], check=True)


def node_project(work: Path) -> Path:
    subprocess.run(["npm", "pack", PACKAGE, "--pack-destination", str(work)], check=True, capture_output=True)
    (archive,) = work.glob("*.tgz")
    with tarfile.open(archive) as tar:
        tar.extractall(work / "unpacked", filter="data")
    root = work / "unpacked" / "package"
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=root, check=True, capture_output=True,
    )  # fmt: skip
    (root / "corral.toml").write_text(CONFIG)
    (root / ".gitignore").write_text("node_modules/\n")
    git_commit(root)
    return root


def plain_project(work: Path) -> Path:
    root = work / "plain"
    root.mkdir()
    (root / "index.js").write_text("module.exports = 1;\n")
    (root / "corral.toml").write_text("[project]\nname = 'bench-plain'\n[checks]\ncommand = 'true'\n")
    git_commit(root)
    return root


def timed_run(repo: Path, playbook: Path, home: Path) -> tuple[float, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["CORRAL_HOME"] = str(home)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "corral", "run", "bench", "--repo", str(repo), "--playbook", str(playbook),
         "--json"],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"corral run failed: {done.stderr[-2000:]}")
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"kind"')]
    checks = [e for e in events if e["kind"] == "check.result"]
    finished = [e for e in events if e["kind"] == "run.finished"]
    return seconds, {
        "checks_passed": bool(checks and checks[-1]["passed"]),
        "checks_s": round(checks[-1]["duration_ms"] / 1000, 1) if checks else None,
        "phase": finished[-1]["phase"],
    }


def main() -> None:
    client = docker_client()
    ensure_images(client, DEFAULT_CLAUDE_CODE, agent_tag(DEFAULT_CLAUDE_CODE), progress=print)
    work = Path(tempfile.mkdtemp(prefix="corral-bench-images-"))
    try:
        node = node_project(work)
        plain = plain_project(work)
        playbook = work / "playbook.yaml"
        playbook.write_text(PLAYBOOK)
        (recipe,) = recipes(client, load_config(node), node)
        for image in client.images.list(name=recipe.repository):
            for tag in image.tags:
                client.images.remove(tag, force=True)
        home = work / "home"
        first, first_info = timed_run(node, playbook, home)
        second, second_info = timed_run(node, playbook, home)
        baseline, baseline_info = timed_run(plain, playbook, home)
        project_size = int(client.images.get(recipe.tag).attrs["Size"])
        agent_size = int(client.images.get(agent_tag(DEFAULT_CLAUDE_CODE)).attrs["Size"])
        result = {
            "first_run_with_build_s": round(first, 1),
            "second_run_cached_s": round(second, 1),
            "default_image_no_deps_run_s": round(baseline, 1),
            "first_over_baseline": round(first / baseline, 2),
            "second_over_baseline": round(second / baseline, 2),
            "project_image_mb": round(project_size / 1e6),
            "agent_image_mb": round(agent_size / 1e6),
            "project_over_agent_size": round(project_size / agent_size, 2),
            "runs": {"first": first_info, "second": second_info, "baseline": baseline_info},
        }
        print(json.dumps(result, indent=2))
        client.images.remove(recipe.tag, force=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
