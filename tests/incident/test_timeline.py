"""Only a read-class call of an incident upstream is evidence the run saw; everything else it did."""

from __future__ import annotations

from corral.audit.timeline import timeline
from corral.events import AnyEvent, GatewayCall


def test_only_incident_reads_go_under_saw() -> None:
    events: list[AnyEvent] = [
        GatewayCall(token_id="t", tool_name="sentry.search_events", access="read", outcome="ok"),
        GatewayCall(token_id="t", tool_name="datadog.get_logs", access="read", outcome="unavailable"),
        GatewayCall(token_id="t", tool_name="datadog.mute_host", access="write", outcome="denied"),
        GatewayCall(token_id="t", tool_name="forge.list_checks", access="read", outcome="ok"),
        GatewayCall(token_id="t", tool_name="sentry.update_issue", outcome="denied"),  # before `access`
    ]
    for seq, event in enumerate(events):
        event.seq = seq
    assert [e.section for e in timeline(events)] == ["saw", "saw", "did", "did", "did"]
    assert "unavailable" in timeline(events)[1].summary  # a failed read is shown as failed


def test_the_evidence_collector_keeps_incident_reads_as_stored() -> None:
    from corral.audit.observed import ObservedSink
    from corral.incident.evidence import EvidenceCollector
    from tests.gateway.conftest import MemorySink

    collector = EvidenceCollector()
    sink = ObservedSink(MemorySink(), [collector])
    sink.emit(GatewayCall(token_id="t", tool_name="forge.list_checks", access="read", outcome="ok"))
    sink.emit(
        GatewayCall(
            token_id="t",
            tool_name="sentry.get_sentry_resource",
            access="read",
            arguments={"url": "https://acme.sentry.io/issues/4211/"},
            arguments_hash="ab" * 32,
            outcome="ok",
        )
    )
    sink.emit(GatewayCall(token_id="t", tool_name="sentry.update_issue", access="write", outcome="denied"))
    assert collector.as_result() == [
        {
            "seq": 1,
            "tool": "sentry.get_sentry_resource",
            "arguments": {"url": "https://acme.sentry.io/issues/4211/"},
            "arguments_hash": "ab" * 32,
            "outcome": "ok",
        }
    ]
