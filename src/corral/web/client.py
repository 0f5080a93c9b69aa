"""`corral run --server URL`: submit a run to a corral server and follow its events as a local run does.

The token comes from CORRAL_SERVER_TOKEN (`corral user token NAME` prints one), never from a flag
that would land in shell history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import httpx

from corral.errors import AuthError, CorralError
from corral.events import Event, parse_event
from corral.state.models import RunRecord

TOKEN_ENV = "CORRAL_SERVER_TOKEN"


def _headers() -> dict[str, str]:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise AuthError(f"{TOKEN_ENV} is not set", hint=f"export {TOKEN_ENV}=$(corral user token NAME)")
    return {"Authorization": f"Bearer {token}"}


def _check(reply: httpx.Response) -> httpx.Response:
    if reply.status_code >= 400:
        try:
            body = reply.json()
        except ValueError:
            body = {"error": reply.text[:200]}
        raise CorralError(
            f"the server refused ({reply.status_code}): {body.get('error', '')}", hint=body.get("hint")
        )
    return reply


def run_on_server(
    url: str, task: str, repo: Path, playbook: Path | None, observe: Callable[[Event], None]
) -> RunRecord:
    base = url.rstrip("/")
    headers = _headers()
    body = {"repo": str(repo.expanduser().resolve()), "task": task}
    if playbook is not None:
        body["playbook"] = str(playbook.expanduser().resolve())
    with httpx.Client(timeout=httpx.Timeout(30.0, read=None)) as client:
        run_id = _check(client.post(f"{base}/api/runs", json=body, headers=headers)).json()["run_id"]
        with client.stream("GET", f"{base}/api/runs/{run_id}/events?raw=1", headers=headers) as stream:
            _check(stream)
            for line in stream.iter_lines():
                if line.startswith("data: ") and line != "data: {}":
                    observe(parse_event(json.loads(line[6:])))
        return RunRecord.model_validate(
            _check(client.get(f"{base}/api/runs/{run_id}", headers=headers)).json()
        )
