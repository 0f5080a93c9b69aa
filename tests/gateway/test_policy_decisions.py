"""What a grant allows and refuses, operator by operator and JSON type by JSON type, and what it says.

Every refusal is checked whole: `.allowed is False`, the rule it names and the reason the agent reads.
Every load error is checked by its full text, since that text is all an operator sees of a bad grant.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
import pytest

from corral.errors import ConfigError
from corral.gateway.catalog import Catalog
from corral.gateway.policy import (
    Decision,
    Policy,
    argument_shape,
    compile_policy,
    fold,
    json_type,
    parse_rule,
    plain,
)

TYPED: dict[str, Any] = {
    "s": {"type": "string"},
    "i": {"type": "integer"},
    "n": {"type": "number"},
    "b": {"type": "boolean"},
    "z": {"type": "null"},
    "a": {"type": "array"},
    "o": {"type": "object"},
    "m": {"type": ["string", "null"]},
    "u": {},
    "c": {"type": "custom-type"},
    "d": {"type": "string", "default": "preview"},
}
# For each JSON type: a value a grant names, and another value of the same type.
VALUES: dict[str, tuple[Any, Any]] = {
    "s": ("a", "b"),
    "i": (1, 2),
    "n": (1.5, 2.5),
    "b": (True, False),
    "z": (None, "x"),
    "a": ([1, "x"], [1]),
    "o": ({"k": [1]}, {"k": [2]}),
}


def tool(name: str, props: dict[str, Any], required: list[str] | None = None) -> types.Tool:
    return types.Tool(
        name=name, input_schema={"type": "object", "properties": props, "required": required or []}
    )


def catalog(*extra: types.Tool) -> Catalog:
    return Catalog.build(
        {
            "kit": [
                tool("typed", TYPED, ["s"]),
                tool("peek", {}),
                tool("to_XML", {"s": {"type": "string"}, "rootXML": {"type": "string"}}),
                *extra,
            ],
            "forge": [tool("merge_pull_request", {"number": {"type": "integer"}}), tool("comment", {})],
            "deploy": [tool("promote", {"deployment_id": {"type": "string"}}), tool("stage", {})],
        },
        {"kit.peek": "read"},
        {},
    )


CAT = catalog()


def decide(grants: list[str], arguments: dict[str, Any], qualified: str = "kit.typed") -> Decision:
    policy = compile_policy(grants, CAT)
    return policy.decide(qualified, CAT.get(qualified), arguments)


def refused(grant: str, reason: str) -> Decision:
    return Decision(False, grant, reason, {"failed": {grant: [reason]}})


def granted(grant: str) -> Decision:
    return Decision(True, grant, "granted")


JSON_TYPE = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
JSON_TYPE |= {list: "array", dict: "object"}


def mistyped(arg: str, value: Any) -> str | None:
    """The schema type `value` is not of, for an argument of kit.typed with one JSON type."""
    kind = TYPED.get(arg, {}).get("type")
    if not isinstance(kind, str) or kind == "custom-type":
        return None
    actual = JSON_TYPE[type(value)]
    return None if actual == kind or (kind, actual) == ("number", "integer") else actual


def held_by(c: str, value: Any) -> str:
    arg = c.split()[0]
    shown = f"`{c}` does not hold for {arg}={json.dumps(value)}"
    actual = mistyped(arg, value)
    return (
        shown
        if actual is None
        else f"{shown}: the tool's schema types {arg} {TYPED[arg]['type']}, not {actual}"
    )


@pytest.mark.parametrize("arg", list(VALUES))
def test_equals_decides_present_other_and_absent_arguments(arg: str) -> None:
    v, w = VALUES[arg]
    c = f"{arg} == {json.dumps(v)}"
    grant = f"kit.typed({c})"
    assert decide([grant], {arg: v}) == granted(grant)
    assert decide([grant], {arg: w}) == refused(grant, held_by(c, w))
    assert decide([grant], {}) == refused(grant, f"argument '{arg}' is required by `{c}`")


@pytest.mark.parametrize("arg", list(VALUES))
def test_not_equals_holds_for_other_and_absent_arguments(arg: str) -> None:
    v, w = VALUES[arg]
    c = f"{arg} != {json.dumps(v)}"
    grant = f"kit.typed({c})"
    assert decide([grant], {arg: v}) == refused(grant, held_by(c, v))
    # A value of another type than the schema's (null's other value is a string) is refused too.
    assert decide([grant], {arg: w}) == (
        granted(grant) if mistyped(arg, w) is None else refused(grant, held_by(c, w))
    )
    assert decide([grant], {}) == granted(grant)


@pytest.mark.parametrize("arg", list(VALUES))
def test_in_decides_members_non_members_and_absent_arguments(arg: str) -> None:
    v, w = VALUES[arg]
    c = f"{arg} in {json.dumps([v])}"
    grant = f"kit.typed({c})"
    assert decide([grant], {arg: v}) == granted(grant)
    assert decide([grant], {arg: w}) == refused(grant, held_by(c, w))
    assert decide([grant], {}) == refused(grant, f"argument '{arg}' is required by `{c}`")


@pytest.mark.parametrize(
    ("c", "arguments"),
    [
        ("b == true", {"b": 1}),
        ("i == 1", {"i": True}),
        ("i == 0", {"i": False}),
        ("i in [0, 1]", {"i": False}),
        ("b in [false]", {"b": 0}),
        ("a == [true]", {"a": [1]}),
        ('o == {"k": false}', {"o": {"k": 0}}),
        ("a == [1, 2]", {"a": [1]}),
        ('o == {"k": 1}', {"o": {"k": 1, "extra": 2}}),
        ('s == "1"', {"s": 1}),
    ],
)
def test_json_values_of_another_type_are_not_equal(c: str, arguments: dict[str, Any]) -> None:
    # A grant for `dry_run == true` must not let `dry_run: 1` through to a tool that compares strictly,
    # and `!=` must not be passed by a value of another type than the schema's: `dry_run != true` is
    # no grant for `dry_run: 1`, which a lenient upstream reads as true. Inside a list or an object
    # there is no schema type to hold it to, so there `!=` holds.
    grant = f"kit.typed({c})"
    [(arg, value)] = arguments.items()
    assert decide([grant], arguments) == refused(grant, held_by(c, value))
    if " in " not in c:
        opposite = grant.replace(" == ", " != ")
        expected = (
            granted(opposite)
            if mistyped(arg, value) is None
            else refused(opposite, held_by(c.replace(" == ", " != "), value))
        )
        assert decide([opposite], arguments) == expected


@pytest.mark.parametrize(
    ("literal", "value"),
    [('["a", "b"]', "ab"), ('{"k": 1}', ["k"]), ('{"k": 1}', "k"), ("[1]", {"0": 1}), ('"k"', {"k": 1})],
)
def test_a_list_or_object_never_equals_a_value_of_another_shape(literal: str, value: Any) -> None:
    grant = f"kit.typed(u == {literal})"  # `u` has no type in its schema: any literal loads
    assert decide([grant], {"u": value}) == refused(grant, held_by(f"u == {literal}", value))
    assert decide([f"kit.typed(u != {literal})"], {"u": value}).allowed is True


def test_json_numbers_compare_by_value() -> None:
    assert decide(["kit.typed(n == 1)"], {"n": 1.0}).allowed is True
    assert decide(["kit.typed(n in [2, 1.0])"], {"n": 1}).allowed is True
    assert (
        decide(['kit.typed(o == {"k": [1, {"x": null}]})'], {"o": {"k": [1.0, {"x": None}]}}).allowed is True
    )


@pytest.mark.parametrize(
    ("c", "value", "allowed"),
    [
        ('s ~ "^a"', "abc", True),
        ('s ~ "^a"', "bac", False),
        ('s ~ "b"', "abc", True),  # search, not match
        ('s ~ "^A"', "abc", False),  # case-sensitive
        ('s ~ "^a"', 5, False),  # not a string: never matches
        ('s !~ "^a"', "bac", True),
        ('s !~ "^a"', "abc", False),
        ('s !~ "^a"', 5, False),  # not a string: never passes either
        ('s ~ ""', "", True),
        ('s ~ "say \\"hi\\""', 'they say "hi"', True),
        ('s !~ "x\\",y"', 'a x",y', False),
    ],
)
def test_regex_operators_decide_present_arguments(c: str, value: Any, allowed: bool) -> None:
    grant = f"kit.typed({c})"
    expected = granted(grant) if allowed else refused(grant, held_by(c, value))
    assert decide([grant], {"s": value}) == expected


def test_regex_operators_decide_absent_arguments() -> None:
    assert decide(['kit.typed(s ~ "^a")'], {}) == refused(
        'kit.typed(s ~ "^a")', "argument 's' is required by `s ~ \"^a\"`"
    )
    assert decide(['kit.typed(s !~ "^a")'], {}) == granted('kit.typed(s !~ "^a")')


def test_escaped_quotes_in_a_regex_are_read_as_quotes() -> None:
    rule = parse_rule('kit.typed(s ~ "say \\"hi\\"", s !~ "x\\",y")')
    assert [(c.op, c.value) for c in rule.constraints] == [("~", 'say "hi"'), ("!~", 'x",y')]


@pytest.mark.parametrize(
    ("c", "allowed"),
    [
        ('d == "preview"', True),
        ('d != "preview"', False),
        ('d in ["staging", "preview"]', True),
        ('d ~ "^pre"', True),
        ('d !~ "^pre"', False),
    ],
)
def test_an_absent_argument_takes_its_schema_default(c: str, allowed: bool) -> None:
    grant = f"kit.typed({c})"
    assert decide([grant], {}) == (granted(grant) if allowed else refused(grant, held_by(c, "preview")))


def test_a_long_value_is_cut_in_the_reason() -> None:
    value = "x" * 500
    reason = decide(['kit.typed(s == "a")'], {"s": value}).reason
    assert reason == f'`s == "a"` does not hold for s={json.dumps(value)[:200]}'


def test_a_refusal_names_the_first_rule_and_every_failure() -> None:
    first, second = 'kit.typed(s == "a", i == 1)', 'kit.typed(s == "b")'
    decision = decide([first, second], {"s": "c", "i": 2})
    assert decision.allowed is False and decision.rule == first
    assert decision.reason == '`s == "a"` does not hold for s="c"; `i == 1` does not hold for i=2'
    assert decision.details == {
        "failed": {
            first: ['`s == "a"` does not hold for s="c"', "`i == 1` does not hold for i=2"],
            second: ['`s == "b"` does not hold for s="c"'],
        }
    }
    assert decide([first, second], {"s": "b"}) == granted(second)
    assert decide([first, second], {"s": "a", "i": 1}) == granted(first)


def test_never_grantable_tools_are_refused_to_agents_whatever_the_grants() -> None:
    for qualified in ("forge.merge_pull_request", "deploy.promote"):
        decision = decide(["forge.*", "deploy.*"], {"number": 1}, qualified)
        assert decision == Decision(
            False, "never-grantable", f"{qualified} needs a recorded human approval, not an agent token"
        )
        assert decision.allowed is False
        human = compile_policy([qualified], CAT, agent=False)
        assert human.decide(qualified, CAT.get(qualified), {}) == granted(qualified)
        assert human.covered(CAT.get(qualified))  # type: ignore[arg-type]
    agent = compile_policy(["forge.*"], CAT)
    assert not agent.covered(CAT.get("forge.merge_pull_request"))  # type: ignore[arg-type]
    assert agent.decide("forge.comment", CAT.get("forge.comment"), {}) == granted("forge.*")


def test_default_deny_for_unknown_and_uncovered_tools() -> None:
    policy = compile_policy(["kit.peek"], CAT)
    assert policy.decide("kit.nope", None, {}) == Decision(
        False, "default-deny", "no tool named kit.nope on this gateway"
    )
    assert policy.decide("kit.typed", CAT.get("kit.typed"), {"s": "a"}) == Decision(
        False, "default-deny", "no grant of this token covers kit.typed"
    )
    assert not policy.covered(CAT.get("kit.typed"))  # type: ignore[arg-type]
    assert policy.covered(CAT.get("kit.peek"))  # type: ignore[arg-type]


def test_read_grants_cover_read_class_tools_only() -> None:
    policy = compile_policy(["kit.*:read"], CAT)
    assert policy.decide("kit.peek", CAT.get("kit.peek"), {}) == granted("kit.*:read")
    assert policy.decide("kit.typed", CAT.get("kit.typed"), {"s": "a"}).rule == "default-deny"
    assert set(policy.schema_hashes) == {"kit.peek"}


def test_a_changed_or_new_tool_is_refused_until_the_policy_is_compiled_again() -> None:
    policy = compile_policy(["kit.*"], CAT)
    changed = catalog().entries["kit.peek"]
    newer = catalog(tool("peek2", {})).get("kit.peek2")
    moved = Catalog.build({"kit": [tool("peek", {"q": {"type": "string"}})]}, {}, {}).get("kit.peek")
    assert moved is not None and newer is not None
    for entry, validated in ((moved, changed.schema_hash), (newer, None)):
        assert policy.decide(entry.qualified, entry, {}) == Decision(
            False,
            "schema-changed",
            f"{entry.qualified} changed its schema since the policy was validated; "
            "it is refused until re-validated",
            {"validated_hash": validated, "current_hash": entry.schema_hash},
        )
        assert not policy.covered(entry)
    assert policy.covered(changed)


def test_a_policy_version_is_a_short_stable_digest_of_its_grants_tools_and_holder() -> None:
    a = compile_policy(["kit.peek", "forge.comment"], CAT)
    assert len(a.version) == 16 and int(a.version, 16) >= 0
    assert compile_policy(["kit.peek", "forge.comment"], CAT).version == a.version
    assert compile_policy(["forge.comment", "kit.peek"], CAT).version != a.version
    assert compile_policy(["kit.peek", "forge.comment"], CAT, agent=False).version != a.version
    assert isinstance(a, Policy) and a.by_tool["kit.peek"] == (a.rules[0],)


@pytest.mark.parametrize(
    ("arg", "good", "bad"),
    [
        ("s", ['"x"', '""'], ["1", "true", "null", "[]", "{}"]),
        ("i", ["1", "-3"], ["1.5", "true", '"1"', "null"]),
        ("n", ["1", "1.5"], ["true", '"1"', "[]"]),
        ("b", ["true", "false"], ["1", "0", '"true"', "null"]),
        ("z", ["null"], ["0", '""', "false"]),
        ("a", ["[]", '[1, "x"]'], ["{}", '"[]"', "1"]),
        ("o", ["{}", '{"k": 1}'], ["[]", '"{}"']),
        ("m", ['"x"', "null"], ["1", "true"]),
        ("u", ["1", '"x"', "true", "null", "[]"], []),
        ("c", ["1", '"x"', "true", "null"], []),  # a type corral does not know: nothing is refused
    ],
)
def test_literals_are_type_checked_at_load_for_every_json_type(
    arg: str, good: list[str], bad: list[str]
) -> None:
    kind = TYPED[arg].get("type")
    for literal in good:
        compile_policy([f"kit.typed({arg} == {literal})", f"kit.typed({arg} in [{literal}])"], CAT)
    for literal in bad:
        for c, value in (
            (f"{arg} == {literal}", json.loads(literal)),
            (f"{arg} in [{literal}]", [json.loads(literal)]),
        ):
            grant = f"kit.typed({c})"
            with pytest.raises(ConfigError) as err:
                compile_policy([grant], CAT)
            assert str(err.value) == (
                f"grant {grant!r}: {arg} is {kind} in the schema; {value!r} can never match\n"
                "  hint: use a literal of the argument's type"
            )


def test_one_bad_member_of_an_in_list_is_a_load_error() -> None:
    grant = 'kit.typed(i in [1, "2"])'
    with pytest.raises(ConfigError) as err:
        compile_policy([grant], CAT)
    assert str(err.value) == (
        f"grant {grant!r}: i is integer in the schema; [1, '2'] can never match\n"
        "  hint: use a literal of the argument's type"
    )


@pytest.mark.parametrize("arg", ["i", "n", "b", "z", "a", "o", "m", "c"])
@pytest.mark.parametrize("op", ["~", "!~"])
def test_regexes_on_arguments_that_are_not_strings_are_load_errors(arg: str, op: str) -> None:
    grant = f'kit.typed({arg} {op} "1")'
    with pytest.raises(ConfigError) as err:
        compile_policy([grant], CAT)
    assert str(err.value) == f"grant {grant!r}: {arg} is not a string; regexes need one\n  hint: use == or in"


@pytest.mark.parametrize("arg", ["s", "u", "d"])
def test_regexes_on_strings_and_untyped_arguments_load(arg: str) -> None:
    compile_policy([f'kit.typed({arg} ~ "1")', f'kit.typed({arg} !~ "1")'], CAT)


def err_text(grant: str) -> str:
    with pytest.raises(ConfigError) as err:
        compile_policy([grant], CAT)
    return str(err.value)


@pytest.mark.parametrize(
    ("grant", "message"),
    [
        (
            "kit.nope",
            "grant 'kit.nope' matches no tool of this gateway\n"
            "  hint: check the spelling against `corral gateway check`; classes come from [annotations]",
        ),
        (
            "forge.*:read",
            "grant 'forge.*:read' matches no read-class tool of this gateway\n"
            "  hint: check the spelling against `corral gateway check`; classes come from [annotations]",
        ),
        (
            "forge.merge_pull_request",
            "grant 'forge.merge_pull_request': "
            "forge.merge_pull_request is never grantable to an agent token\n"
            "  hint: merges and promotions need a recorded human approval "
            "(`corral approve`, `corral deploy promote`)",
        ),
        (
            'kit.*(s == "a")',
            "grant 'kit.*(s == \"a\")': argument constraints need one exact tool, not a glob\n"
            "  hint: write one constrained grant per tool",
        ),
        (
            "kit.typed(q == 1)",
            "grant 'kit.typed(q == 1)': kit.typed has no argument 'q' "
            "(its arguments: a, b, c, d, i, m, n, o, s, u, z)\n"
            "  hint: constrain an argument from the tool's inputSchema",
        ),
        (
            "kit.peek(q == 1)",
            "grant 'kit.peek(q == 1)': kit.peek has no argument 'q' (its arguments: none)\n"
            "  hint: constrain an argument from the tool's inputSchema",
        ),
        (
            "kit.typed(s = 1)",
            "grant 'kit.typed(s = 1)': cannot read constraint 's = 1'\n"
            '  hint: write ARG OP VALUE, with OP one of ==, !=, in, ~, !~ (e.g. target == "preview")',
        ),
        (
            "kit.typed(s == merged)",
            "grant 'kit.typed(s == merged)': 'merged' is not a JSON value\n"
            '  hint: quote strings: target == "preview"',
        ),
        (
            'kit.typed(s in "a")',
            "grant 'kit.typed(s in \"a\")': `in` needs a JSON list, got '\"a\"'\n"
            '  hint: e.g. target in ["a", "b"]',
        ),
        (
            "kit.typed()",
            "grant 'kit.typed()': empty constraint list\n  hint: drop the () or add a constraint",
        ),
        (
            "kit.typed( , )",
            "grant 'kit.typed( , )': empty constraint list\n  hint: drop the () or add a constraint",
        ),
        (
            "no_dot_here",
            "grant 'no_dot_here' is not of the form <upstream>.<tool>[:read][(constraints)]\n"
            '  hint: e.g. "sentry.*:read" or \'deploy.stage(target == "preview")\'',
        ),
    ],
)
def test_load_errors_say_what_is_wrong_and_what_to_do(grant: str, message: str) -> None:
    assert err_text(grant) == message


@pytest.mark.parametrize("literal", ["", "x", '"a"b', 'a"b"', "'abc'", "^a"])
@pytest.mark.parametrize("op", ["~", "!~"])
def test_regexes_must_be_quoted(op: str, literal: str) -> None:
    grant = f"kit.typed(s {op} {literal})"
    c = f"s {op} {literal}".strip()
    assert (
        err_text(grant)
        == f'grant {grant!r}: the regex in {c!r} must be "quoted"\n  hint: e.g. sql ~ "^select"'
    )


def test_a_bad_regex_is_a_load_error() -> None:
    message = err_text('kit.typed(s ~ "([")')
    assert message.startswith("grant 'kit.typed(s ~ \"([\")': bad regex '([': ")
    assert message.endswith("\n  hint: fix the pattern")


@pytest.mark.parametrize(
    "grant", ['kit.typed(s == "a)', "kit.typed(a == [1)", "kit.typed(a == [1]])", 'kit.typed(o == {"k": 1)']
)
def test_unbalanced_quotes_and_brackets_are_load_errors(grant: str) -> None:
    assert (
        err_text(grant) == f'grant {grant!r}: unbalanced quotes or brackets\n  hint: quote strings with "..."'
    )


def test_commas_inside_strings_lists_and_objects_do_not_split_constraints() -> None:
    rule = parse_rule('kit.typed(s in ["a,b", "c"],a == [[1, 2], [3]],o == {"k": [1, 2]}, s !~ "x\\",y")')
    assert [(c.arg, c.op, c.value) for c in rule.constraints] == [
        ("s", "in", ["a,b", "c"]),
        ("a", "==", [[1, 2], [3]]),
        ("o", "==", {"k": [1, 2]}),
        ("s", "!~", 'x",y'),
    ]
    assert [c.text for c in rule.constraints] == [
        's in ["a,b", "c"]',
        "a == [[1, 2], [3]]",
        'o == {"k": [1, 2]}',
        's !~ "x\\",y"',
    ]
    compile_policy([rule.text], CAT)


def test_empty_items_between_commas_are_ignored() -> None:
    rule = parse_rule('kit.typed(, s == "a",, i == 1,)')
    assert [(c.arg, c.value) for c in rule.constraints] == [("s", "a"), ("i", 1)]


def test_operators_need_no_spaces() -> None:
    rule = parse_rule('kit.typed(s=="a",i!=1,a in[1],s~"^a",s!~"b")')
    assert [(c.arg, c.op) for c in rule.constraints] == [
        ("s", "=="),
        ("i", "!="),
        ("a", "in"),
        ("s", "~"),
        ("s", "!~"),
    ]


def test_a_tool_name_with_capitals_is_an_exact_tool_not_a_glob() -> None:
    grant = 'kit.to_XML(rootXML == "doc", s == "a")'
    policy = compile_policy([grant], CAT)
    assert policy.decide("kit.to_XML", CAT.get("kit.to_XML"), {"rootXML": "doc", "s": "a"}) == granted(grant)


def test_rule_text_pattern_and_read_flag() -> None:
    rule = parse_rule("  sentry.*:read  ")
    assert (rule.text, rule.pattern, rule.read_only, rule.constraints) == (
        "sentry.*:read",
        "sentry.*",
        True,
        (),
    )
    assert parse_rule("sentry.issues").read_only is False


def test_argument_shape_marks_optional_arguments_and_unions() -> None:
    entry = catalog(tool("odd", {"x": "not-a-schema", "y": {"type": ["string", "null"]}}, ["y"])).get(
        "kit.odd"
    )
    assert entry is not None and argument_shape(entry) == {"x": "any?", "y": "string|null"}
    typed = CAT.get("kit.typed")
    assert typed is not None
    assert argument_shape(typed) == {
        "s": "string",
        "i": "integer?",
        "n": "number?",
        "b": "boolean?",
        "z": "null?",
        "a": "array?",
        "o": "object?",
        "m": "string|null?",
        "u": "any?",
        "c": "custom-type?",
        "d": "string?",
    }


# ---- forged arguments: case, unicode, type juggling (the battery's tool.forge_* probes) -----------

# One of each: case, compatibility (fullwidth), format characters (Cf: zero-width space, joiner, soft
# hyphen, BOM), a control character (Cc), combining marks (Mn: an acute accent; Me: an enclosing circle).
FOLDED_FORMS = [
    "MERGED",
    "Merged",
    "ｍｅｒｇｅｄ",
    "mer\u200bged",
    "mer\u200dged",
    "merg\u00aded",
    "\ufeffmerged",
    "mer\x00ged",
    "me\u0301rged",
    "merged\u20dd",
    "ＭＥＲＧＥＤ\u200c",
]


@pytest.mark.parametrize("value", FOLDED_FORMS)
def test_a_denylist_refuses_every_form_that_folds_to_its_literal(value: str) -> None:
    for c in ('s != "merged"', 's !~ "^merged$"', 's !~ "erge"'):
        grant = f"kit.typed({c})"
        assert decide([grant], {"s": value}) == refused(grant, held_by(c, value)), (c, value)
    # An allowlist compares the value as sent: no folded form is the literal.
    assert decide(['kit.typed(s == "merged")'], {"s": value}).allowed is False
    assert decide(['kit.typed(s in ["merged"])'], {"s": value}).allowed is False
    assert decide(['kit.typed(s ~ "^merged$")'], {"s": value}).allowed is False


def test_a_denylist_folds_the_literal_too_and_still_grants_other_words() -> None:
    assert decide(['kit.typed(s != "ＭＥＲＧＥＤ")'], {"s": "merged"}).allowed is False
    for value in ("unmerged", "merge", "emerged", "open"):
        assert decide(['kit.typed(s != "merged")'], {"s": value}) == granted('kit.typed(s != "merged")')
    assert decide(['kit.typed(s !~ "^merged$")'], {"s": "unmerged"}).allowed is True
    # A letter of another script is another character to every upstream that compares strings; there
    # is no confusables table here (docs/security.md, "Adversarial battery").
    assert decide(['kit.typed(s != "merged")'], {"s": "m\u0435rged"}).allowed is True


@pytest.mark.parametrize("value", ["ＤＲＯＰ", "DR\u200bOP", "D\u0301ROP", "drop", "DROP"])
def test_a_denylist_regex_with_capitals_sees_the_plain_form_and_the_folded_one(value: str) -> None:
    # "ＤＲＯＰ" folds to "drop", which a case-sensitive "DROP" would not match: a denylist's regex is
    # tried in any case on the plain and folded forms, so case is no way past it either.
    grant = 'kit.typed(s !~ "DROP")'
    assert decide([grant], {"s": value}) == refused(grant, held_by('s !~ "DROP"', value))
    assert decide([grant], {"s": "dr op"}) == granted(grant)
    # An allowlist's regex stays as written: case-sensitive, on the value as sent.
    assert decide(['kit.typed(s ~ "DROP")'], {"s": value}).allowed is (value == "DROP")


def test_plain_keeps_case_and_fold_drops_it() -> None:
    assert plain("ＤＲ\u200bＯ\u0301P") == "DROP" and fold("ＤＲ\u200bＯ\u0301P") == "drop"


def test_fold_is_nfkc_casefolded_without_format_control_and_combining_characters() -> None:
    assert [fold(v) for v in FOLDED_FORMS] == ["merged"] * len(FOLDED_FORMS)
    assert fold("Straße") == "strasse" and fold("ﬁle") == "file" and fold("") == ""
    assert fold("a\tb\nc") == "abc" and fold("x y") == "x y"  # a space is not dropped


@pytest.mark.parametrize(
    ("c", "arg", "value", "kind"),
    [
        ('s != "merged"', "s", ["merged"], "array"),
        ('s != "merged"', "s", {"v": "merged"}, "object"),
        ('s != "merged"', "s", None, "null"),
        ('s != "merged"', "s", 1, "integer"),
        ('s !~ "^merged"', "s", ["merged"], "array"),
        ("i != 1", "i", "1", "string"),
        ("i != 1", "i", True, "boolean"),
        ("i == 1", "i", 1.0, "number"),
        ("i in [1, 2]", "i", [1], "array"),
        ("b != false", "b", 0, "integer"),
        ("b != false", "b", "false", "string"),
        ("n != 1", "n", "1.0", "string"),
        ("a != [1]", "a", 1, "integer"),
        ('o != {"k": 1}', "o", [["k", 1]], "array"),
    ],
)
def test_a_value_of_another_type_than_the_schema_fails_every_operator(
    c: str, arg: str, value: Any, kind: str
) -> None:
    grant = f"kit.typed({c})"
    schema = TYPED[arg]["type"]
    shown = f"`{c}` does not hold for {arg}={json.dumps(value)}"
    reason = f"{shown}: the tool's schema types {arg} {schema}, not {kind}"
    assert decide([grant], {arg: value}) == refused(grant, reason)


def test_json_type_names_integers_before_numbers_and_other_values_by_their_class() -> None:
    values = [True, 0, 1.0, "", None, [], {}, b""]
    assert [json_type(v) for v in values] == [
        "boolean", "integer", "number", "string", "null", "array", "object", "bytes"
    ]  # fmt: skip


def test_a_regex_on_an_untyped_argument_still_needs_a_string() -> None:
    for c in ('u ~ "^a"', 'u !~ "^a"'):
        assert decide([f"kit.typed({c})"], {"u": 5}) == refused(f"kit.typed({c})", held_by(c, 5))


def test_a_long_look_alike_name_is_cut_in_the_reason() -> None:
    name = "d" + "\u200b" * 60
    reason = decide(['kit.typed(d == "preview")'], {name: "staging"}).reason
    assert reason == f"argument {json.dumps(name)[:100]} is not in the tool's schema but reads as 'd'"


def test_a_union_type_or_an_untyped_argument_takes_what_its_schema_takes() -> None:
    assert decide(['kit.typed(m != "merged")'], {"m": None}).allowed is True
    assert decide(['kit.typed(m != "merged")'], {"m": 1}).allowed is False
    assert decide(['kit.typed(u != "merged")'], {"u": ["merged"]}).allowed is True
    assert (
        decide(['kit.typed(c != "merged")'], {"c": ["merged"]}).allowed is True
    )  # unknown type: not ruled out
    assert decide(["kit.typed(n == 1)"], {"n": 1}).allowed is True  # an integer is a number


@pytest.mark.parametrize("name", ["D", "d\u200b", "ｄ", "\u200dd"])
def test_an_unknown_argument_that_reads_as_a_constrained_one_fails_it(name: str) -> None:
    grant = 'kit.typed(d == "preview")'  # d defaults to "preview" when absent
    reason = f"argument {json.dumps(name)} is not in the tool's schema but reads as 'd'"
    assert decide([grant], {name: "staging"}) == refused(grant, reason)
    assert decide(['kit.typed(s != "merged")'], {"s": "open", "S": "merged"}).allowed is False
    # An unrelated unknown argument is the upstream's to refuse, and the schema's own name is not foreign.
    assert decide([grant], {"x": "staging"}) == granted(grant)
    assert decide([grant], {"d": "preview"}) == granted(grant)
