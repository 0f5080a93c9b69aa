"""Scripted candidates: a playbook per task, a default, and a noisy choice per epoch from a seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.errors import PlaybookError
from corral.regress.candidates import ScriptedCandidate


def _write(tmp_path: Path, spec: dict[str, object]) -> ScriptedCandidate:
    path = tmp_path / "candidate.yaml"
    path.write_text(json.dumps(spec))
    return ScriptedCandidate.load(path)


def test_tasks_map_to_playbooks_by_text_then_glob_then_default(tmp_path: Path) -> None:
    spec = {"model": "claude-c-20260101", "tasks": {"fix the bug": "a.yaml", "deploy *": "b.yaml"}}
    candidate = _write(tmp_path, spec)
    assert candidate.playbook_for("fix the bug", 0) == tmp_path / "a.yaml"
    assert candidate.playbook_for("deploy the preview", 2) == tmp_path / "b.yaml"
    with pytest.raises(PlaybookError, match="no playbook for task"):
        candidate.playbook_for("something else", 0)  # never a silent fall-through to a live model
    with_default = _write(tmp_path, {**spec, "default": "c.yaml"})
    assert with_default.playbook_for("something else", 0) == tmp_path / "c.yaml"


def test_noisy_fixes_about_half_its_epochs_and_is_reproducible(tmp_path: Path) -> None:
    spec = {"model": "claude-noisy-20260101", "noisy": {"fix": "fix.yaml", "miss": "miss.yaml", "seed": 3}}
    candidate, again = _write(tmp_path, spec), _write(tmp_path, spec)
    draws = [candidate.playbook_for(f"task {t}", e).name for t in range(8) for e in range(25)]
    assert draws == [again.playbook_for(f"task {t}", e).name for t in range(8) for e in range(25)]
    assert 0.35 < draws.count("fix.yaml") / len(draws) < 0.65
    other = _write(tmp_path, {**spec, "noisy": {"fix": "fix.yaml", "miss": "miss.yaml", "seed": 4}})
    assert draws != [other.playbook_for(f"task {t}", e).name for t in range(8) for e in range(25)]


def test_a_bad_candidate_file_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="not a candidate file"):
        _write(tmp_path, {"model": "claude-latest", "default": "a.yaml"})  # an alias, not a dated id
    with pytest.raises(PlaybookError, match="not a candidate file"):
        _write(tmp_path, {"model": "claude-c-20260101", "playbooks": {}})
