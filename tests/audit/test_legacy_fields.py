"""Logs written before a field was renamed: `secret.requested` once said `consumer` where it now says
`requester`. A stored line is hash-chained and never rewritten, so such a log must still verify, read
as typed events under the current name, and show in the timeline."""

from __future__ import annotations

import json
from typing import Literal

from corral.audit.log import AuditLog
from corral.audit.timeline import entry
from corral.events import Event, SecretRequested, parse_event
from corral.settings import Settings


class _OldSecretRequested(Event):
    """The event as corral wrote it before the rename (main before 07af7f0)."""

    kind: Literal["secret.requested"] = "secret.requested"
    name: str
    provider: str
    consumer: str = ""


def test_an_old_log_verifies_and_reads_consumer_as_requester(settings: Settings) -> None:
    with AuditLog.open(settings, None, background=False) as audit:
        recorder = audit.for_run("r-legacy01")
        recorder.emit(_OldSecretRequested(name="DB", provider="env", consumer="checks"))
        recorder.emit(SecretRequested(name="NPM", provider="file", requester="agent", purpose="env NPM"))
        recorder.close()
        rows = audit.rows("r-legacy01")
        assert '"consumer":"checks"' in rows[0].data.replace(" ", "")  # stored as written, untouched
        assert audit.verify("r-legacy01", strict=True).ok
        old, new = audit.read("r-legacy01")
        assert isinstance(old, SecretRequested) and isinstance(new, SecretRequested)
        assert (old.name, old.requester, old.purpose) == ("DB", "checks", "")
        assert (new.name, new.requester) == ("NPM", "agent")
        summaries = [entry(e).summary for e in (old, new)]
        assert any("DB" in s and "checks" in s for s in summaries), summaries


def test_parse_event_upgrades_every_input_form() -> None:
    line = {"kind": "secret.requested", "name": "K", "provider": "vault", "consumer": "gateway"}
    for data in (line, json.dumps(line), json.dumps(line).encode()):
        event = parse_event(data)
        assert isinstance(event, SecretRequested) and event.requester == "gateway"


def test_the_current_name_wins_over_an_old_one_and_other_kinds_are_untouched() -> None:
    both = {"kind": "secret.requested", "name": "K", "provider": "env", "consumer": "x", "requester": "agent"}
    event = parse_event(both)
    assert isinstance(event, SecretRequested) and event.requester == "agent"
    # `consumer` is not a field of any other kind: such a line is still refused, not silently read.
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError):
        parse_event({"kind": "run.phase", "from_phase": "a", "to_phase": "b", "consumer": "x"})
    with pytest.raises(pydantic.ValidationError):
        SecretRequested.model_validate({"name": "K", "provider": "env", "consumer": "x"})
