"""`corral incident SOURCE`: which incident a run investigates, parsed before anything starts.

https://ORG.sentry.io/issues/ISSUE_ID/            a Sentry issue URL (sentry.io)
https://HOST/organizations/ORG/issues/ISSUE_ID/   a Sentry issue URL (self-hosted)
sentry:ORG/ISSUE_ID
datadog:monitor/ID
datadog:incident/ID
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from corral.errors import IncidentSourceError

Vendor = Literal["sentry", "datadog"]
Kind = Literal["issue", "monitor", "incident"]
INCIDENT_UPSTREAMS: frozenset[str] = frozenset({"sentry", "datadog"})
"""Gateway upstream names whose read-class calls are what an incident run saw."""

_SLUG = r"[a-z0-9][a-z0-9_-]{0,49}"
_SENTRY_SHORT = re.compile(rf"^sentry:(?P<org>{_SLUG})/(?P<id>[0-9]{{1,20}})$")
_DATADOG_SHORT = re.compile(r"^datadog:(?P<kind>monitor|incident)/(?P<id>[0-9A-Za-z-]{1,64})$")
_SENTRY_SAAS_HOST = re.compile(rf"^(?P<org>{_SLUG})\.sentry\.io$")
_SENTRY_PATH = re.compile(rf"^(?:/organizations/(?P<org>{_SLUG}))?/issues/(?P<id>[0-9]{{1,20}})/?$")
FORMS = "a Sentry issue URL, sentry:ORG/ISSUE_ID, datadog:monitor/ID or datadog:incident/ID"


@dataclass(frozen=True)
class IncidentSource:
    vendor: Vendor
    kind: Kind
    id: str
    org: str = ""
    url: str = ""
    """The address the user gave (a Sentry issue URL), kept as the incident's link; empty for short forms."""

    @property
    def ref(self) -> str:
        """The canonical short form, as written in the task and the run's result."""
        if self.vendor == "sentry":
            return f"sentry:{self.org}/{self.id}"
        return f"datadog:{self.kind}/{self.id}"

    def as_result(self) -> dict[str, str]:
        """What a run's result keeps of it, so its pull request can link the incident."""
        return {"ref": self.ref, "vendor": self.vendor, "kind": self.kind, "id": self.id, "url": self.url}


def parse_source(text: str) -> IncidentSource:
    """The incident `text` names; IncidentSourceError (naming the accepted forms) for anything else."""
    value = text.strip()
    if m := _SENTRY_SHORT.match(value):
        return IncidentSource("sentry", "issue", m["id"], m["org"])
    if m := _DATADOG_SHORT.match(value):
        kind: Kind = "monitor" if m["kind"] == "monitor" else "incident"
        return IncidentSource("datadog", kind, m["id"])
    if value.startswith(("https://", "http://")):
        return _sentry_url(value)
    raise IncidentSourceError(f"unknown incident source {text!r}", hint=f"pass {FORMS}")


def _sentry_url(value: str) -> IncidentSource:
    url = urlsplit(value)
    host = (url.hostname or "").lower()
    path = _SENTRY_PATH.match(url.path)
    saas = _SENTRY_SAAS_HOST.match(host)
    org = (path["org"] if path else None) or (saas["org"] if saas else None)
    if url.scheme != "https" or path is None or org is None:
        raise IncidentSourceError(
            f"{value!r} is not a Sentry issue URL",
            hint="use https://ORG.sentry.io/issues/ID/ or https://HOST/organizations/ORG/issues/ID/, "
            f"or pass {FORMS}",
        )
    return IncidentSource("sentry", "issue", path["id"], org, url=value)


def incident_grants(grants: list[str], source: IncidentSource) -> list[str]:
    """corral.toml's grants for an incident run: plus the source's read class, minus every glob grant
    that would reach an incident upstream's write tools. A write tool stays granted only when
    corral.toml names it exactly (e.g. `sentry.update_issue`): that is the operator saying so."""
    kept = [g for g in grants if not _broad_incident_grant(g)]
    read = f"{source.vendor}.*:read"
    return kept if read in kept else [*kept, read]


def _broad_incident_grant(grant: str) -> bool:
    head = grant.split("(", 1)[0].strip()
    if head.endswith(":read") or not any(c in head for c in "*?["):
        return False
    upstream = head.split(".", 1)[0]
    return any(fnmatch.fnmatchcase(name, upstream) for name in INCIDENT_UPSTREAMS)
