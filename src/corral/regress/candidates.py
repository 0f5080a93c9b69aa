"""Where a candidate's responses come from: the live upstream, or scripted playbooks per task.

Production re-asks the real model (the host key, through the same proxy code as every run). Tests,
demos and dry runs describe a "model" as a YAML file of playbooks chosen per task:

    model: claude-candidate-20260101        # the candidate's dated id (what the proxy pins)
    default: fix.yaml                       # for tasks not listed (optional)
    tasks:                                  # task text (or a glob over it) -> playbook
      "fix the add bug": fix.yaml
    noisy:                                  # optional: per epoch, `fix` with probability p, else `miss`
      fix: fix.yaml
      miss: nothing.yaml
      p: 0.5
      seed: 7

Paths are relative to the file. The noisy choice is drawn from `seed`, the task and the epoch, so a
suite's draws do not depend on the order its runs happen to finish in.
"""

from __future__ import annotations

import fnmatch
import random
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.config import _require_dated
from corral.errors import PlaybookError


class _Noisy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    fix: str
    miss: str
    p: float = Field(default=0.5, ge=0, le=1)
    seed: int = 0


class _CandidateFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str
    default: str | None = None
    tasks: dict[str, str] = {}
    noisy: _Noisy | None = None


class ScriptedCandidate:
    """A candidate played by the scripted model: one playbook per task and epoch."""

    def __init__(self, spec: _CandidateFile, base: Path) -> None:
        self.model = _require_dated(spec.model)
        self._spec = spec
        self._base = base

    @classmethod
    def load(cls, path: Path) -> ScriptedCandidate:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            spec = _CandidateFile.model_validate(raw)
            return cls(spec, path.parent)
        except (OSError, yaml.YAMLError, ValidationError, ValueError) as exc:
            raise PlaybookError(
                f"{path}: not a candidate file: {exc}",
                hint="see `corral regress --help`: model, tasks (task -> playbook), default, noisy",
            ) from exc

    def playbook_for(self, task: str, epoch: int) -> Path:
        """The playbook for one epoch of `task`. A task the file does not cover is an error (that
        epoch fails): falling through to a live model would be a silent change of what is tested."""
        spec = self._spec
        if spec.noisy is not None:
            rng = random.Random(f"{spec.noisy.seed}:{task}:{epoch}")
            return self._base / (spec.noisy.fix if rng.random() < spec.noisy.p else spec.noisy.miss)
        if task in spec.tasks:
            return self._base / spec.tasks[task]
        for pattern, playbook in spec.tasks.items():
            if fnmatch.fnmatchcase(task, pattern):
                return self._base / playbook
        if spec.default:
            return self._base / spec.default
        raise PlaybookError(
            f"the candidate file for {self.model} has no playbook for task {task!r}",
            hint="add the task (or a glob matching it) under `tasks:`, or set `default:`",
        )
