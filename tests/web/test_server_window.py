"""A long run's page shows its timeline a page at a time, server-rendered, with plain links: the
cursor (`?after=SEQ`) and the group filter need no JavaScript, and the page still verifies the chain."""

from __future__ import annotations

import re

from corral import events as ev
from corral.web.window import PAGE
from tests.web.conftest import HOSTILE, Site

CALLS = 230  # two model responses and 460 call events after the fixture's 8: three pages
ASKED = 140  # the one call a model response asked for; its call is event 10 + 2 * ASKED + 1


def _long_run(site: Site) -> None:
    recorder = site.services.audit().for_run(site.run_id)
    try:
        counted = {"gen_ai.request.model": "m", "exchange_id": "x9", "gen_ai.operation.name": "count_tokens"}
        recorder.emit(ev.ModelResponse.model_validate(counted))  # no turn of the agent's
        use = {"id": f"c{ASKED}", "name": "Bash", "input": {}}
        response = {"gen_ai.request.model": "m", "exchange_id": "x2", "tool_uses": [use]}
        recorder.emit(ev.ModelResponse.model_validate(response))
        for i in range(CALLS):
            call = {"gen_ai.tool.name": "Bash", "gen_ai.tool.call.id": f"c{i}"}
            recorder.emit(ev.ToolCall.model_validate({**call, "input": {"command": f"echo {i}"}}))
            recorder.emit(ev.ToolResult.model_validate({**call, "output": f"{i} {HOSTILE}"}))
        recorder.emit(ev.CheckResult(command="pytest", exit_code=0, passed=True, output=""))
        edit = {"gen_ai.tool.call.id": f"c{ASKED}", "path": "calc.py", "diff": "+x\n"}
        recorder.emit(ev.FileEdit.model_validate(edit))
    finally:
        recorder.close()


def _seqs(html: str) -> list[int]:
    table = html[html.index('id="timeline"') :]
    return [int(s) for s in re.findall(r"<tr class=\"\w+\"><td>(\d+)</td>", table)]


def _link(html: str, rel: str) -> str:
    match = re.search(r'<a href="([^"]+)" rel="' + rel + '"', html)
    assert match, rel
    return match.group(1).replace("&amp;", "&")


def test_the_timeline_pages_by_a_seq_cursor_and_links_each_page(site: Site) -> None:
    _long_run(site)
    total = 8 + 2 + 2 * CALLS + 2
    site.sign_in("vera")
    first = site.client.get(f"/runs/{site.run_id}").text
    assert _seqs(first) == list(range(1, PAGE + 1))
    assert f"events 1–{PAGE} of {total}" in first and 'rel="prev"' not in first
    assert f"verified, {total} events" in first  # the chain is verified for the whole run
    second = site.client.get(_link(first, "next")).text
    assert _seqs(second) == list(range(PAGE + 1, 2 * PAGE + 1))
    assert _seqs(site.client.get(_link(second, "prev")).text) == list(range(1, PAGE + 1))
    last = site.client.get(_link(second, "next")).text
    assert _seqs(last) == list(range(2 * PAGE + 1, total + 1)) and 'rel="next"' not in last
    assert "&lt;script&gt;window.pwned=1" in last and "<script>window.pwned" not in last


def test_a_group_filter_shows_only_that_group_and_counts_every_group(site: Site) -> None:
    _long_run(site)
    site.sign_in("vera")
    shipped = site.client.get(f"/runs/{site.run_id}?group=shipped").text
    rows = re.findall(r'<tr class="(\w+)"><td>\d+</td>', shipped)
    assert rows and set(rows) == {"shipped"}
    assert f"did ({2 * CALLS + 5})" in shipped and "shipped (2)" in shipped  # the fixture's and ours
    did = site.client.get(f"/runs/{site.run_id}?group=did").text
    assert len(_seqs(did)) == PAGE and "group=did" in _link(did, "next")
    more = site.client.get(_link(did, "next")).text  # the next page keeps the filter
    assert set(re.findall(r'<tr class="(\w+)"><td>\d+</td>', more)) == {"did"}
    assert _seqs(more)[0] > _seqs(did)[-1]
    assert site.client.get(f"/runs/{site.run_id}?group=bogus").status_code == 422
    assert site.client.get(f"/runs/{site.run_id}?after=-1").status_code == 422


def _row(html: str, seq: int) -> str:
    match = re.search(rf"<tr class=\"\w+\"><td>{seq}</td>.*?</tr>", html, re.S)
    assert match, seq
    return match.group(0)


def test_tool_calls_are_matched_against_every_model_response_not_just_the_pages(site: Site) -> None:
    _long_run(site)
    site.sign_in("vera")
    html = site.client.get(f"/runs/{site.run_id}?after={PAGE}").text
    asked = 10 + 2 * ASKED + 1
    assert asked in _seqs(html)  # its model response (seq 10) is on the first page, not this one
    assert "tool.call" in _row(html, asked) and "not asked by the model" not in _row(html, asked)
    assert "tool.call" in _row(html, asked + 2) and "not asked by the model" in _row(html, asked + 2)


def test_each_edits_diff_names_the_model_turn_that_asked_for_it(site: Site) -> None:
    _long_run(site)
    site.sign_in("vera")
    html = site.client.get(f"/runs/{site.run_id}").text
    # The fixture's one response (turn 1) asked for no tool; ours (turn 2) asked for c{ASKED}.
    assert "turn 2 · #" in html and "calc.py</h3>" in html
    assert "no model turn asked for this edit</span> · #6 " in html  # the fixture's unasked edit
