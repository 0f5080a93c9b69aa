"""The process's own exits (corral.outputs): every CLI command's stdout and stderr and every log record
go through the process redactor. The model key is registered by the command itself (it is in the
host's environment), so a stored raw value, whoever wrote it, is never printed."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from corral.audit.redact import process_redactor
from corral.cli import app
from corral.outputs import RedactingStream, redact_logging
from corral.services import Services
from corral.settings import load_settings

HOST_KEY = "sk-ant-h0st>>>???~~~/+k"
LOGGED = "log-cred>>>???~~~/+L"
STREAMED = "str-cred>>>???~~~/+S"


def test_a_command_prints_no_form_of_the_hosts_model_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", HOST_KEY)
    services = Services(load_settings())
    state = services.state()
    state.ensure_project("shop", repo="/nonexistent/repo")
    b64 = base64.b64encode(HOST_KEY.encode()).decode()
    task = f"use {HOST_KEY} or {b64} or {quote(HOST_KEY, safe='')}"
    run = state.create_run(project="shop", task=task, repo="/nonexistent/repo", base_commit="0" * 40)
    services.close()
    for argv in (["show", run.run_id], ["show", run.run_id, "--json"], ["runs", "--json"], ["runs"]):
        out = CliRunner().invoke(app, argv, terminal_width=400)
        assert out.exit_code == 0, out.output
        for form in (HOST_KEY, b64, quote(HOST_KEY, safe="")):
            assert form not in out.output, (argv, form)
        # The table cuts its task cell: what it cuts is the redacted text, so no piece of the key shows.
        assert "[secret:ANTHR" in out.output, argv
    shown = json.loads(CliRunner().invoke(app, ["show", run.run_id, "--json"]).output)
    assert (
        shown["task"]
        == "use [secret:ANTHROPIC_API_KEY] or [secret:ANTHROPIC_API_KEY] or [secret:ANTHROPIC_API_KEY]"
    )


def test_a_value_written_in_two_pieces_is_redacted_at_every_split() -> None:
    process_redactor().register("STREAM_TOKEN", STREAMED)
    text = f"a {STREAMED} b\n"
    for cut in range(len(text) + 1):
        target = io.StringIO()
        stream = RedactingStream(target)  # type: ignore[arg-type]
        print(text[:cut], end="", file=stream)
        print(text[cut:], end="", file=stream)
        stream.flush()
        assert target.getvalue() == "a [secret:STREAM_TOKEN] b\n", cut


def test_a_redacting_stream_is_a_text_stream_to_click_and_rich() -> None:
    stream = RedactingStream(io.StringIO())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        stream.write(b"bytes")  # type: ignore[arg-type]
    assert stream.encoding and stream.errors and stream.writable() and not stream.isatty()


def test_log_records_are_redacted_whoever_logs_and_whichever_handler_writes() -> None:
    redact_logging()
    process_redactor().register("LOG_TOKEN", LOGGED)
    target = io.StringIO()
    handler = logging.StreamHandler(target)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("corral.gateway.upstreams")
    logger.addHandler(handler)
    try:
        encoded = base64.b64encode(LOGGED.encode()).decode()
        logger.warning("upstream %s failed: %s", "github", f"401 for token {LOGGED} ({encoded})")
        try:
            raise RuntimeError(f"the upstream echoed {LOGGED}")
        except RuntimeError:
            logger.exception("gateway %s failed", "tools/call")
        logging.getLogger("uvicorn.error").addHandler(handler)
        logging.getLogger("uvicorn.error").error("%s", quote(LOGGED, safe=""))
    finally:
        logger.removeHandler(handler)
        logging.getLogger("uvicorn.error").removeHandler(handler)
    written = target.getvalue()
    for form in (LOGGED, encoded, quote(LOGGED, safe="")):
        assert form not in written
    assert written.count("[secret:LOG_TOKEN]") == 4, written
    assert "Traceback" in written and "RuntimeError: the upstream echoed [secret:LOG_TOKEN]" in written
