"""The local deploy's builder: `[deploy] build` in a fresh sandbox on a commit, its output kept.

The commit's tree is exported with `git archive` (no `.git` in the build directory, so the build
cannot reach the repository), handed to the sandbox uid, and built with the run sandbox's spec: the
project's hidden paths are masked and there is no network. Only `[deploy] output` is kept, copied
with its links as links (the server refuses anything that resolves outside the build).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from corral.config import Config
from corral.errors import DeployError
from corral.paths import Protection, normalize
from corral.sandbox import AGENT_UID, SandboxBackend, SandboxSpec
from corral.workspace import _GIT_ENV, _SAFE_GIT, Workspace, _git, protected_in_commit


def _export(repo: Path, commit: str, dest: Path) -> None:
    proc = subprocess.Popen(
        ["git", *_SAFE_GIT, "archive", "--format=tar", commit],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_GIT_ENV,
    )
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        tar.extractall(dest, filter="data")
    if proc.wait() != 0:
        raise DeployError(f"git archive {commit} failed in {repo}", hint="check the repository")


def _chown_tree(root: Path, uid: int) -> None:
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, uid)
    os.chown(root, uid, uid)


class SandboxBuilder:
    def __init__(
        self, repo: Path, config: Config, backend: SandboxBackend, run_id: str, scratch: Path
    ) -> None:
        self.repo, self.config, self.backend, self.run_id, self.scratch = (
            repo,
            config,
            backend,
            run_id,
            scratch,
        )

    def __call__(self, commit: str, dest: Path) -> None:
        deploy = self.config.deploy
        assert deploy is not None and deploy.build
        self.scratch.mkdir(parents=True, exist_ok=True)
        src = Path(tempfile.mkdtemp(prefix="build-", dir=self.scratch))
        try:
            _export(self.repo, commit, src)
            _chown_tree(src, AGENT_UID)
            protection = Protection.from_config(self.config)
            git_dir = Path(_git(["rev-parse", "--absolute-git-dir"], cwd=self.repo).strip())
            tree = Workspace(repo=self.repo, path=src, branch="", base_commit=commit, git_dir=git_dir)
            spec = SandboxSpec.from_config(
                self.config.sandbox,
                run_id=self.run_id,
                workspace=src,
                purpose="build",
                protection=protection,
                required_paths=protected_in_commit(tree, protection),
            )
            sandbox = self.backend.create(spec)
            try:
                result = sandbox.exec(["sh", "-c", deploy.build], timeout=deploy.timeout_seconds)
            finally:
                sandbox.remove()
            if result.exit_code != 0:
                raise DeployError(
                    f"the build `{deploy.build}` exited {result.exit_code}: {result.output[-2000:]}",
                    hint="fix [deploy] build in corral.toml; production is unchanged",
                )
            output = src / normalize(deploy.output)
            if output.is_symlink() or not output.is_dir():
                raise DeployError(
                    f"the build left no directory {deploy.output!r}",
                    hint="set [deploy] output to the directory the build writes",
                )
            shutil.copytree(output, dest, symlinks=True)
        finally:
            shutil.rmtree(src, ignore_errors=True)
