"""Store outage: our own FerretDB is killed mid-run; the run goes on spooling; after a restart the
backlog ships with nothing lost and nothing duplicated."""

from __future__ import annotations

import time

import pymongo

from corral.audit.log import AuditLog
from corral.audit.spool import list_spools
from corral.events import ShellCommand, ToolCall
from corral.settings import Settings
from tests.audit.conftest import FerretDB


def wait_for(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def emit_pair(rec: object, i: int) -> None:
    rec.emit(
        ToolCall(tool_name="Bash", tool_call_id=f"t{i}", input={"command": f"make {i}"}),  # type: ignore[attr-defined]
        durable=True,
    )
    rec.emit(ShellCommand(tool_call_id=f"t{i}", command=f"make {i}", exit_code=0))  # type: ignore[attr-defined]


def test_ferretdb_outage_spools_then_ships_without_loss_or_duplicates(
    settings: Settings, own_ferretdb: FerretDB
) -> None:
    url = own_ferretdb.url + "?serverSelectionTimeoutMS=500&connectTimeoutMS=500"
    audit = AuditLog.open(settings, url, ship_interval=0.05)
    rec = audit.for_run("run-outage")
    for i in range(25):
        emit_pair(rec, i)
    assert wait_for(lambda: audit.backlog() == 0), "the live shipper should keep up while the store is up"

    own_ferretdb.kill()
    for i in range(25, 100):  # the run goes on: no exception, the spool grows
        emit_pair(rec, i)
    assert wait_for(lambda: not audit.online)
    assert audit.backlog() >= 150
    assert not audit.status().reachable

    own_ferretdb.start()  # same port, same data directory
    assert wait_for(lambda: audit.online and audit.backlog() == 0), audit.store_error
    rec.close()
    audit.close()

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(own_ferretdb.url)
    events = client.get_default_database()["events"]
    seqs = sorted(int(d["seq"]) for d in events.find({"run_id": "run-outage"}))  # type: ignore[call-overload]
    client.close()
    assert seqs == list(range(1, 201))  # nothing lost, nothing duplicated
    with AuditLog.open(settings, url, background=False) as check:
        assert check.verify("run-outage", strict=True).ok
    assert list_spools(settings.spool_dir) == []


def test_process_exit_during_outage_ships_at_next_start(settings: Settings, own_ferretdb: FerretDB) -> None:
    url = own_ferretdb.url + "?serverSelectionTimeoutMS=500&connectTimeoutMS=500"
    audit = AuditLog.open(settings, url, background=False)
    own_ferretdb.kill()
    rec = audit.for_run("run-exit")
    for i in range(10):
        emit_pair(rec, i)
    rec.close()
    audit.close()  # the store is down: the spool stays behind
    assert len(list_spools(settings.spool_dir)) == 1

    own_ferretdb.start()
    with AuditLog.open(settings, url, background=False) as audit:
        assert [e.seq for e in audit.read("run-exit")] == list(range(1, 21))
        assert audit.verify("run-exit", strict=True).ok
        assert audit.backlog() == 0
