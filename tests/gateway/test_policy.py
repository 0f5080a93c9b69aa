"""The grant grammar, load-time validation (each error names the rule) and call-time decisions."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest

from corral.errors import ConfigError
from corral.gateway.catalog import Catalog
from corral.gateway.policy import compile_policy, parse_rule


def tool(name: str, props: dict[str, Any], required: list[str] | None = None) -> types.Tool:
    return types.Tool(
        name=name, input_schema={"type": "object", "properties": props, "required": required or []}
    )


def catalog(**changes: types.Tool) -> Catalog:
    tools = {
        "github": [
            tool(
                "update_pull_request",
                {"number": {"type": "integer"}, "state": {"type": "string"}},
                ["number"],
            ),
            tool("list_issues", {}),
        ],
        "db": [tool("query", {"sql": {"type": "string"}})],
        "deploy": [
            tool("stage", {"target": {"type": "string", "default": "preview"}}),
            tool("promote", {"deployment_id": {"type": "string"}}),
        ],
        "forge": [tool("merge_pull_request", {"number": {"type": "integer"}}), tool("comment", {})],
    }
    for qualified, replacement in changes.items():
        upstream, name = qualified.split("__")
        tools[upstream] = [replacement if t.name == name else t for t in tools[upstream]]
    return Catalog.build(tools, {"github.list_issues": "read"}, {})


def test_constraints_parse_with_json_literals_and_raw_regexes() -> None:
    rule = parse_rule(r'db.query(sql ~ "^\s*select\b", sql !~ "into\s")')
    assert [(c.arg, c.op) for c in rule.constraints] == [("sql", "~"), ("sql", "!~")]
    assert rule.constraints[0].value == r"^\s*select\b"
    rule = parse_rule('deploy.stage(target in ["preview", "staging"])')
    assert rule.constraints[0].value == ["preview", "staging"]
    assert parse_rule("sentry.*:read").read_only


@pytest.mark.parametrize(
    ("grant", "message"),
    [
        ("github.merge_everything", "matches no tool"),
        ("sentyr.*", "matches no tool"),
        ("db.*:read", "matches no read-class tool"),
        ('github.update_pull_request(status != "merged")', "has no argument 'status'"),
        ('github.*(state != "merged")', "need one exact tool, not a glob"),
        ('github.update_pull_request(number == "7")', "can never match"),
        ('db.query(sql ~ "([")', "bad regex"),
        ("github.update_pull_request(state = merged)", "cannot read constraint"),
        ("forge.merge_pull_request", "never grantable to an agent token"),
        ("deploy.promote", "never grantable to an agent token"),
        ("no_dot_here", "is not of the form"),
    ],
)
def test_bad_grants_are_load_errors_naming_the_rule(grant: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_policy([grant], catalog())
    assert message in str(err.value) and grant in str(err.value)


def test_globs_skip_never_grantable_tools_but_humans_may_hold_them() -> None:
    agent = compile_policy(["forge.*", "deploy.*"], catalog())
    assert set(agent.schema_hashes) == {"forge.comment", "deploy.stage"}
    human = compile_policy(["forge.merge_pull_request"], catalog(), agent=False)
    entry = catalog().get("forge.merge_pull_request")
    assert human.decide("forge.merge_pull_request", entry, {"number": 1}).allowed
    assert agent.decide("forge.merge_pull_request", entry, {"number": 1}).rule == "never-grantable"


def test_decisions_apply_constraints_defaults_and_absent_arguments() -> None:
    cat = catalog()
    policy = compile_policy(
        [
            'github.update_pull_request(state != "merged")',
            'deploy.stage(target == "preview")',
            r'db.query(sql ~ "^\s*select\b")',
        ],
        cat,
    )
    upr = cat.get("github.update_pull_request")
    assert policy.decide("github.update_pull_request", upr, {"number": 1, "state": "closed"}).allowed
    assert policy.decide("github.update_pull_request", upr, {"number": 1}).allowed  # != holds when absent
    refused = policy.decide("github.update_pull_request", upr, {"number": 1, "state": "merged"})
    assert not refused.allowed and refused.rule == 'github.update_pull_request(state != "merged")'
    stage = cat.get("deploy.stage")
    assert policy.decide("deploy.stage", stage, {}).allowed  # schema default "preview"
    assert not policy.decide("deploy.stage", stage, {"target": "production"}).allowed
    query = cat.get("db.query")
    assert policy.decide("db.query", query, {"sql": "  SELECT 1"}).allowed is False  # case-sensitive
    assert policy.decide("db.query", query, {"sql": "select * from t"}).allowed
    assert policy.decide("db.query", query, {}).reason.startswith("argument 'sql' is required")
    none = policy.decide("github.list_issues", cat.get("github.list_issues"), {})
    assert (none.allowed, none.rule) == (False, "default-deny")


def test_any_matching_rule_allows_and_version_tracks_rules_and_schemas() -> None:
    cat = catalog()
    policy = compile_policy(['deploy.stage(target == "preview")', 'deploy.stage(target == "staging")'], cat)
    assert policy.decide("deploy.stage", cat.get("deploy.stage"), {"target": "staging"}).allowed
    same = compile_policy(['deploy.stage(target == "preview")', 'deploy.stage(target == "staging")'], cat)
    assert same.version == policy.version
    assert compile_policy(['deploy.stage(target == "preview")'], cat).version != policy.version
    changed = catalog(
        deploy__stage=tool("stage", {"target": {"type": "string"}, "force": {"type": "boolean"}})
    )
    assert (
        compile_policy(['deploy.stage(target == "preview")'], changed).version
        != compile_policy(['deploy.stage(target == "preview")'], cat).version
    )
    stale = policy.decide("deploy.stage", changed.get("deploy.stage"), {"target": "preview"})
    assert (stale.allowed, stale.rule) == (False, "schema-changed")
