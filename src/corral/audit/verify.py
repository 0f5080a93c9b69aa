"""Chain verification: from a store, or offline from an exported JSONL file.

Walking the events in the order the store (or the file) gives them, each event gets at most one
finding, the first that applies:
- `edited`    its stored hash is not the hash of its content (a field was changed);
- `inserted`  a second event claims a seq already seen, or an event of another run is in the chain;
- `reordered` an event arrives before a lower seq that comes later, or its `prev_hash` does not
              link to the event before it (an earlier event was changed and rehashed, or moved);
- `deleted`   a seq is missing and never comes.
Then every checkpoint must match the event at its seq (`checkpoint`), and events after the last
checkpoint are reported as an unanchored tail: a warning for a live or crashed run, an error with
`strict` (a finished run, where anything after the closing checkpoint was appended later).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from corral.audit.blobs import BlobStore
from corral.audit.chain import CHECKPOINT_KIND, Checkpoint, EventRow, event_hash, genesis_hash
from corral.errors import NotFound

ProblemKind = Literal[
    "edited", "deleted", "inserted", "reordered", "checkpoint", "unanchored", "blob", "malformed"
]


class Problem(BaseModel):
    kind: ProblemKind
    seq: int
    """The chain position at fault (for `deleted`, the first missing seq)."""
    position: int
    """Index of the offending record in the order read (-1 for checkpoint and tail findings)."""
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at seq {self.seq}: {self.detail}"


class VerifyReport(BaseModel):
    run_id: str
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    problems: list[Problem]
    warnings: list[str]

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        if self.ok:
            return (
                f"run {self.run_id}: chain OK, {self.events} events, head seq {self.head_seq}, "
                f"{self.checkpoints} checkpoints"
            )
        return f"run {self.run_id}: chain BROKEN, first problem: {self.first}"


def verify_rows(
    run_id: str,
    rows: Sequence[EventRow],
    checkpoints: Iterable[Checkpoint],
    *,
    blobs: BlobStore | None = None,
    strict: bool = False,
) -> VerifyReport:
    problems: list[Problem] = []
    warnings: list[str] = []
    payloads: list[dict[str, Any] | None] = []
    for pos, row in enumerate(rows):
        try:
            value = json.loads(row.data)
            payloads.append(value if isinstance(value, dict) and isinstance(value.get("seq"), int) else None)
        except ValueError:
            payloads.append(None)
        if payloads[-1] is None:
            problems.append(
                Problem(kind="malformed", seq=row.seq, position=pos, detail="not an event record")
            )
    later: dict[int, int] = {}  # seq -> how many times it is still to come
    for p in payloads:
        if p is not None:
            later[p["seq"]] = later.get(p["seq"], 0) + 1

    prev = genesis_hash(run_id)
    expected = 1
    seen: dict[int, str] = {}
    for pos, (row, p) in enumerate(zip(rows, payloads, strict=True)):
        if p is None:
            continue
        s: int = p["seq"]
        later[s] -= 1
        stored_hash = str(p.get("hash", ""))
        finding = _finding(run_id, row, p, s, stored_hash, prev, expected, seen, later)
        if finding is not None:
            kind, at, detail = finding
            problems.append(Problem(kind=kind, seq=at, position=pos, detail=detail))
            if kind == "inserted":
                continue  # the chain goes on from the event before the intruder
        if blobs is not None:
            for ref in blobs.refs(p):
                trouble = blobs.check(ref)
                if trouble and "missing" in trouble:
                    warnings.append(f"seq {s}: {trouble}")
                elif trouble:
                    problems.append(Problem(kind="blob", seq=s, position=pos, detail=trouble))
        seen[s] = stored_hash
        prev = stored_hash
        expected = max(expected, s + 1)

    cps = sorted(checkpoints, key=lambda c: c.seq)
    for cp in cps:
        if cp.seq not in seen:
            problems.append(
                Problem(
                    kind="checkpoint",
                    seq=cp.seq,
                    position=-1,
                    detail=f"a {cp.reason} checkpoint anchors seq {cp.seq}, which is missing",
                )
            )
        elif seen[cp.seq] != cp.hash:
            problems.append(
                Problem(
                    kind="checkpoint",
                    seq=cp.seq,
                    position=-1,
                    detail=f"the {cp.reason} checkpoint says hash {cp.hash[:12]}…, "
                    f"the chain has {seen[cp.seq][:12]}…",
                )
            )
    head_seq = max(seen, default=0)
    anchored = cps[-1].seq if cps else 0
    if head_seq > anchored:
        note = (
            f"{head_seq - anchored} events after the last checkpoint (seq {anchored}): the run is live, "
            "crashed before its spool was recovered, or events were appended later"
        )
        if strict:
            problems.append(Problem(kind="unanchored", seq=anchored + 1, position=-1, detail=note))
        else:
            warnings.append(note)
    problems.sort(key=lambda pr: (pr.position if pr.position >= 0 else len(rows), pr.seq))
    return VerifyReport(
        run_id=run_id,
        ok=not problems,
        events=len(rows),
        head_seq=head_seq,
        head_hash=seen.get(head_seq, genesis_hash(run_id)),
        checkpoints=len(cps),
        problems=problems,
        warnings=warnings,
    )


def _finding(
    run_id: str,
    row: EventRow,
    p: dict[str, Any],
    s: int,
    stored_hash: str,
    prev: str,
    expected: int,
    seen: dict[int, str],
    later: dict[int, int],
) -> tuple[ProblemKind, int, str] | None:
    if event_hash(p) != stored_hash:
        return "edited", s, f"hash mismatch at seq {s}: the event's content is not what was hashed"
    if p.get("run_id") != run_id:
        return "inserted", s, f"an event of run {p.get('run_id')!r} sits at seq {s} of this chain"
    if s in seen:
        return "inserted", s, f"a second event claims seq {s}"
    if s > expected:
        if later.get(expected, 0) > 0:
            return "reordered", expected, f"seq {s} comes before seq {expected}"
        missing = f"seq {expected}" if s == expected + 1 else f"seqs {expected}..{s - 1}"
        return "deleted", expected, f"gap: {missing} missing before seq {s}"
    if s < expected:
        return "reordered", s, f"seq {s} comes after seq {expected - 1}"
    if p.get("prev_hash") != prev:
        return (
            "reordered",
            s,
            (
                f"prev_hash mismatch at seq {s}: it does not link to seq {s - 1} "
                "(an earlier event was changed and rehashed, or events were moved)"
            ),
        )
    if row.seq != s or row.hash != stored_hash:
        return "edited", s, f"the store's index fields (seq {row.seq}) disagree with the event (seq {s})"
    return None


def read_export(path: Path) -> dict[str, tuple[list[EventRow], list[Checkpoint]]]:
    """Parse an exported JSONL file into each run's rows (in file order) and checkpoints."""
    if not path.exists():
        raise NotFound(f"export file {path} does not exist", hint="write one with `corral audit export RUN`")
    runs: dict[str, tuple[list[EventRow], list[Checkpoint]]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                raise NotFound(
                    f"{path}:{n} is not JSON", hint="export files hold one JSON record a line"
                ) from None
            run_id = str(value.get("run_id", ""))
            rows, cps = runs.setdefault(run_id, ([], []))
            if value.get("kind") == CHECKPOINT_KIND:
                cps.append(Checkpoint.model_validate(value))
            else:
                rows.append(
                    EventRow(
                        run_id,
                        int(value.get("seq", -1)),
                        str(value.get("kind", "")),
                        str(value.get("ts", "")),
                        str(value.get("hash", "")),
                        line,
                    )
                )
    return runs


def verify_file(path: Path, *, blobs: BlobStore | None = None, strict: bool = False) -> list[VerifyReport]:
    """Verify every run in an exported JSONL file, with no store at all."""
    return [
        verify_rows(run_id, rows, cps, blobs=blobs, strict=strict)
        for run_id, (rows, cps) in read_export(path).items()
    ]


def export_lines(rows: Sequence[EventRow], checkpoints: Iterable[Checkpoint]) -> list[str]:
    """The export format: each event's stored JSON line, then the checkpoints."""
    return [r.data for r in rows] + [c.line() for c in checkpoints]
