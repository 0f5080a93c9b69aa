"""`corral demo --incident`: the demo repository, a Sentry issue whose stack trace points at its bug, and
the Sentry fake and gateway file that serve it, all on this machine (offline once the server is installed).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from corral.errors import ConfigError
from corral.incident.fakes import FakeApi

SENTRY_PACKAGE = "@sentry/mcp-server@0.39.0"
DEMO_SOURCE = "sentry:acme/4211"
DEMO_TOKEN_ENV = "CORRAL_DEMO_SENTRY_TOKEN"
DEMO_READ = (
    "find_organizations",
    "find_projects",
    "search_events",
    "search_issues",
    "get_sentry_resource",
    "search_sentry_tools",
)


def playbook_path() -> Path:
    return Path(str(resources.files("corral") / "playbooks" / "incident-demo.yaml"))


def sentry_entry(home: Path) -> Path:
    """The installed Sentry MCP server: $CORRAL_MCP_NPM_DIR, else <home>/mcp; ConfigError saying how."""
    root = Path(os.environ.get("CORRAL_MCP_NPM_DIR") or home / "mcp")
    entry = root / "node_modules/@sentry/mcp-server/dist/index.js"
    if not entry.is_file():
        raise ConfigError(
            f"the Sentry MCP server is not installed ({entry} is missing)",
            hint=f"install it once, then the demo runs offline: npm install --prefix {root} {SENTRY_PACKAGE}",
        )
    return entry


def _frame(module: str, function: str, line: int, context: list[list[Any]]) -> dict[str, Any]:
    path = module.replace(".", "/") + ".py"
    return {
        "filename": path,
        "absPath": f"/srv/{path}",
        "module": module,
        "function": function,
        "lineNo": line,
        "colNo": None,
        "inApp": True,
        "context": context,
        "vars": {},
    }


def sentry_fixtures() -> dict[str, Any]:
    """Sentry API answers (its documented shapes) for issue 4211 of org `acme`: add() subtracts."""
    issue = {
        "id": "4211",
        "shortId": "CALC-1A",
        "title": "AssertionError: add(2, 3) returned -1",
        "culprit": "calc.ops in add",
        "permalink": "https://acme.sentry.io/issues/4211/",
        "level": "error",
        "status": "unresolved",
        "platform": "python",
        "type": "error",
        "metadata": {"type": "AssertionError", "value": "add(2, 3) returned -1", "filename": "calc/ops.py"},
        "count": "42",
        "userCount": 7,
        "firstSeen": "2026-11-30T08:12:00Z",
        "lastSeen": "2026-12-01T21:40:00Z",
        "project": {"id": "11", "name": "calc", "slug": "calc"},
        "issueCategory": "error",
        "issueType": "error",
    }
    frames = [
        _frame("app.checkout", "total", 18, [[18, "    return add(subtotal, shipping)"]]),
        _frame("calc.ops", "add", 5, [[4, "def add(a, b):"], [5, "    return a - b"]]),
    ]
    exception = {
        "type": "AssertionError",
        "value": "add(2, 3) returned -1",
        "mechanism": {"type": "generic", "handled": False},
        "stacktrace": {"frames": frames},
    }
    event = {
        "id": "9f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "eventID": "9f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "groupID": "4211",
        "projectID": "11",
        "title": issue["title"],
        "message": "",
        "platform": "python",
        "type": "error",
        "dateCreated": "2026-12-01T21:40:00Z",
        "culprit": "calc.ops in add",
        "tags": [{"key": "environment", "value": "production"}],
        "contexts": {},
        "entries": [{"type": "exception", "data": {"values": [exception]}}],
    }
    base = "GET /api/0/organizations/acme"
    return {
        f"{base}/issues/4211/": issue,
        f"{base}/issues/CALC-1A/events/latest/": event,
        f"{base}/issues/CALC-1A/autofix/": {"autofix": None},
        f"{base}/issues/CALC-1A/external-issues/": [],
        f"{base}/replay-count/": {},
    }


def gateway_file(entry: Path, fake: FakeApi, home: Path) -> str:
    annotations = "".join(f'"sentry.{t}" = "read"\n' for t in DEMO_READ)
    return (
        "# The demo's gateway: the official Sentry MCP server against corral's local Sentry fake.\n"
        f'[upstreams.sentry]\ncommand = "node"\nargs = ["{entry}", "--host={fake.host}"]\n'
        f'env = {{ SENTRY_ACCESS_TOKEN = "${{secret:SENTRY_TOKEN}}",'
        f' NODE_EXTRA_CA_CERTS = "{fake.tls.ca_pem}", HOME = "{home}" }}\n\n[annotations]\n{annotations}'
    )


def config_text(base: str) -> str:
    return base + f'\n[secrets]\nSENTRY_TOKEN = "env:{DEMO_TOKEN_ENV}"\n'
