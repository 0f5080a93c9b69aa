"""A loopback stand-in for Vercel's project env API, answering in the documented shapes.

`GET /v10/projects/{idOrName}/env` lists variables without values that can be decrypted;
`GET /v1/projects/{idOrName}/env/{id}` returns one variable with its decrypted `value`. Variables of
type `secret` (legacy) and `sensitive` are listed, but their value is never returned.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeVercel:
    token: str
    team_id: str
    projects: dict[str, list[dict[str, Any]]]
    """project id -> envs, each {"id", "key", "type", "target", "value"}."""
    requests: list[str] = field(default_factory=list)
    url: str = ""


def _handler(fake: FakeVercel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            fake.requests.append(parts.path)
            if self.headers.get("authorization") != f"Bearer {fake.token}":
                self._send(403, {"error": {"code": "forbidden", "message": "Not authorized"}})
                return
            if parse_qs(parts.query).get("teamId") != [fake.team_id]:
                self._send(404, {"error": {"code": "not_found", "message": "Project not found"}})
                return
            segs = parts.path.strip("/").split("/")
            envs = fake.projects.get(segs[2]) if len(segs) >= 4 and segs[1] == "projects" else None
            if envs is None:
                self._send(404, {"error": {"code": "not_found", "message": "Project not found"}})
            elif segs[0] == "v10" and len(segs) == 4 and segs[3] == "env":
                listed = [
                    {k: v for k, v in e.items() if k != "value"} | {"value": "", "decrypted": False}
                    for e in envs
                ]
                self._send(200, {"envs": listed, "pagination": {"count": len(listed), "next": None}})
            elif segs[0] == "v1" and len(segs) == 5 and segs[3] == "env":
                match = [e for e in envs if e["id"] == segs[4]]
                if not match:
                    self._send(404, {"error": {"code": "not_found", "message": "Env not found"}})
                    return
                entry = dict(match[0])
                if entry["type"] in ("secret", "sensitive"):
                    entry.pop("value")
                else:
                    entry["decrypted"] = True
                self._send(200, entry)
            else:
                self._send(404, {"error": {"code": "not_found", "message": "no route"}})

    return Handler


@contextmanager
def fake_vercel(fake: FakeVercel) -> Iterator[FakeVercel]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
