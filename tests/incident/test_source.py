"""`corral incident SOURCE`: every accepted form, and a clear error for anything else."""

from __future__ import annotations

import pytest

from corral.errors import IncidentSourceError
from corral.incident.source import IncidentSource, incident_grants, parse_source


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sentry:acme/4211", IncidentSource("sentry", "issue", "4211", "acme")),
        (
            "https://acme.sentry.io/issues/4211/",
            IncidentSource("sentry", "issue", "4211", "acme", url="https://acme.sentry.io/issues/4211/"),
        ),
        (
            "https://sentry.internal:9443/organizations/acme/issues/77",
            IncidentSource(
                "sentry",
                "issue",
                "77",
                "acme",
                url="https://sentry.internal:9443/organizations/acme/issues/77",
            ),
        ),
        ("datadog:monitor/1234", IncidentSource("datadog", "monitor", "1234")),
        ("datadog:incident/abc-12", IncidentSource("datadog", "incident", "abc-12")),
    ],
)
def test_accepted_forms(text: str, expected: IncidentSource) -> None:
    assert parse_source(text) == expected


def test_ref_is_the_canonical_short_form() -> None:
    assert parse_source("https://acme.sentry.io/issues/4211/").ref == "sentry:acme/4211"
    assert parse_source("datadog:monitor/9").ref == "datadog:monitor/9"


@pytest.mark.parametrize(
    "text",
    [
        "pagerduty:123",
        "sentry:acme",
        "sentry:acme/notanumber",
        "sentry:ACME/1",
        "datadog:dashboard/1",
        "http://acme.sentry.io/issues/1/",  # not HTTPS
        "https://example.com/issues/1/",  # no organisation anywhere
        "https://acme.sentry.io/projects/1/",
        "",
    ],
)
def test_rejected_forms_name_the_accepted_ones(text: str) -> None:
    with pytest.raises(IncidentSourceError) as info:
        parse_source(text)
    assert "sentry:ORG/ISSUE_ID" in str(info.value)


def test_incident_grants_add_the_read_class_and_drop_globs_that_reach_writes() -> None:
    source = parse_source("sentry:acme/1")
    grants = ["forge.comment", "sentry.*", "*.*", "s*.update_issue", "datadog.*:read", "sentry.update_issue"]
    assert incident_grants(grants, source) == [
        "forge.comment",
        "datadog.*:read",
        "sentry.update_issue",  # named exactly in corral.toml: the operator's explicit choice
        "sentry.*:read",
    ]
    assert incident_grants(["sentry.*:read"], source) == ["sentry.*:read"]
