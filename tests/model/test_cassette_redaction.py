"""An exported cassette is an exit: `Cassette.dump` redacts what this process has resolved, even in a
cassette built from a log that a process without the value wrote."""

from __future__ import annotations

import base64
from pathlib import Path

from corral.audit.redact import process_redactor
from corral.model.cassette import Cassette, Exchange, RecordedToolResult

VALUE = "cas-cred>>>???~~~/+c"


def test_a_dumped_cassette_holds_no_form_of_a_resolved_value(tmp_path: Path) -> None:
    encoded = base64.b64encode(VALUE.encode()).decode()
    cassette = Cassette(
        task=f"task {VALUE}",
        exchanges=[
            Exchange(main=True, messages=1, last_user=encoded, content=[{"type": "text", "text": VALUE}])
        ],
        tool_results=[RecordedToolResult(tool_name="Bash", tool_call_id="t1", output=f"{VALUE}\n{encoded}")],
    )
    process_redactor().register("CASSETTE_TOKEN", VALUE)
    path = tmp_path / "c.json"
    cassette.dump(path)
    text = path.read_text()
    assert VALUE not in text and encoded not in text
    loaded = Cassette.load(path)
    assert loaded.task == "task [secret:CASSETTE_TOKEN]"
    assert loaded.exchanges[0].content == [{"type": "text", "text": "[secret:CASSETTE_TOKEN]"}]
    assert loaded.tool_results[0].output == "[secret:CASSETTE_TOKEN]\n[secret:CASSETTE_TOKEN]"
