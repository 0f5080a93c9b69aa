"""Grants: which tools a token may call, and with which arguments. Default deny.

Grammar of one grant (a string in corral.toml `[gateway] grants`):

    grant       := pattern [":read"] ["(" constraint ("," constraint)* ")"]
    pattern     := <upstream>.<tool>, where either part may use the globs * ? [..]
    constraint  := ARG OP LITERAL
    OP          := "==" | "!=" | "in" | "~" | "!~"
    LITERAL     := a JSON value; `in` takes a JSON list; `~` and `!~` take a "quoted" regex, read raw

    sentry.*:read                                  every sentry tool the operator classed 'read'
    deploy.stage(target == "preview")
    github.update_pull_request(state != "merged")
    db.query(sql ~ "^\\s*select\\b")               re.search, case-sensitive

Validation at load (each error names the rule): a pattern that matches no tool; `:read` matching no
read-class tool; a constraint on a glob (it must name exactly one tool); an argument not in that
tool's inputSchema; a literal of the wrong JSON type; a bad regex; and, for agent tokens, any rule
naming a never-grantable tool (globs silently skip those tools, so `forge.*` stays usable).

At call time an absent argument takes its schema `default`; with no default, `==`, `in` and `~` fail
and `!=`, `!~` hold. A tool whose schema hash differs from the one validated is refused until the
policy is compiled again.

Against forged arguments (docs/security.md, "Adversarial battery"): a constrained argument whose value
is not of its schema type fails every operator (`"1"` for an integer, `["merged"]` or `null` for a
string, `1` for a boolean), so `!=` and `!~` cannot be passed by a value of another type. `!=` and `!~`
also fail for a string that equals the literal, or matches the regex, once folded (`fold`: NFKC, case
folded, invisible format and control characters and combining marks dropped; a `!~` regex is tried
case-insensitively on the value's `plain` and folded forms), so "MERGED", "ｍｅｒｇｅｄ"
and "mer\u200bged" are refused like "merged"; `==`, `in` and `~` compare the value as sent, exactly.
An argument whose name is not in the schema but folds to a constrained argument's name ("Target" beside
`target == "preview"`) fails that constraint.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import rfc8785

from corral.errors import ConfigError
from corral.gateway.catalog import NEVER_GRANTABLE_TO_AGENTS, Catalog, ToolEntry

OPS = ("==", "!=", "in", "!~", "~")
_RULE = re.compile(r"^(?P<pattern>[A-Za-z0-9_*?\[\]!.-]+?)(?P<read>:read)?(?:\((?P<body>.*)\))?$", re.S)
_HEAD = re.compile(r"^\s*(?P<arg>[A-Za-z_][A-Za-z0-9_-]*)\s*(?P<op>==|!=|!~|~|in\b)\s*", re.S)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "array": (list,),
    "object": (dict,),
}


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values. Python's `==` says `true == 1` and `[false] == [0]`; JSON does not, and an
    upstream tool may not either, so `dry_run == true` must not grant `dry_run: 1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


_DROPPED = frozenset({"Cf", "Cc", "Mn", "Me"})


def plain(text: str) -> str:
    """`text` NFKC-normalised, without the characters that change the string but not how it reads or
    how a lenient upstream takes it (zero-width and other format characters, controls, combining marks)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize(
        "NFKC", "".join(ch for ch in decomposed if unicodedata.category(ch) not in _DROPPED)
    )


def fold(text: str) -> str:
    """The form a denylist compares: `plain`, and case-insensitive."""
    return unicodedata.normalize("NFKC", plain(text).casefold())


def json_type(value: Any) -> str:
    """The JSON Schema type name of a value (`integer` before `number`), or its Python type's name."""
    if isinstance(value, bool):
        return "boolean"
    return next((n for n, t in _JSON_TYPES.items() if isinstance(value, t)), type(value).__name__)


@dataclass(frozen=True)
class Constraint:
    arg: str
    op: str
    value: Any
    text: str
    regex: re.Pattern[str] | None = None
    any_case: re.Pattern[str] | None = None
    """The regex case-insensitive: what a denylist (`!~`) also refuses."""

    def _actual(self, arguments: Mapping[str, Any], schema_props: Mapping[str, Any]) -> tuple[bool, Any]:
        if self.arg in arguments:
            return True, arguments[self.arg]
        prop = schema_props.get(self.arg)
        if isinstance(prop, dict) and "default" in prop:
            return True, prop["default"]
        return False, None

    @functools.cached_property
    def _folded_arg(self) -> str:
        return fold(self.arg)

    def _look_alike(self, arguments: Mapping[str, Any], schema_props: Mapping[str, Any]) -> str | None:
        """An argument the schema does not know whose name folds to this constraint's argument."""
        return next((k for k in arguments if k not in schema_props and fold(k) == self._folded_arg), None)

    def _mistyped(self, actual: Any, schema_props: Mapping[str, Any]) -> bool:
        prop = schema_props.get(self.arg)
        return isinstance(prop, dict) and not _type_ok(actual, prop)

    def holds(self, arguments: Mapping[str, Any], schema_props: Mapping[str, Any]) -> bool:
        if self._look_alike(arguments, schema_props) is not None:
            return False
        present, actual = self._actual(arguments, schema_props)
        if not present:
            return self.op in ("!=", "!~")
        if self._mistyped(actual, schema_props):
            return False
        if self.op == "==":
            return _json_equal(actual, self.value)
        if self.op == "!=":
            return not _json_equal(actual, self.value) and not (
                isinstance(actual, str) and isinstance(self.value, str) and fold(actual) == fold(self.value)
            )
        if self.op == "in":
            return any(_json_equal(actual, v) for v in self.value)
        assert self.regex is not None
        if not isinstance(actual, str):
            return False
        if self.op == "~":
            return self.regex.search(actual) is not None
        # A denylist also refuses the value's plain and folded forms, in any case: `!~ "DROP"` refuses
        # "drop", "ＤＲＯＰ" and "DR\u200bOP" as it refuses "DROP".
        assert self.any_case is not None
        forms = (plain(actual), fold(actual))
        return self.regex.search(actual) is None and all(self.any_case.search(f) is None for f in forms)

    def failure(self, arguments: Mapping[str, Any], schema_props: Mapping[str, Any]) -> str | None:
        """None when the argument satisfies this constraint, else why not (for the agent to read)."""
        if self.holds(arguments, schema_props):
            return None
        alike = self._look_alike(arguments, schema_props)
        if alike is not None:
            return f"argument {json.dumps(alike)[:100]} is not in the tool's schema but reads as '{self.arg}'"
        present, actual = self._actual(arguments, schema_props)
        if not present:
            return f"argument '{self.arg}' is required by `{self.text}`"
        shown = f"`{self.text}` does not hold for {self.arg}={json.dumps(actual)[:200]}"
        if self._mistyped(actual, schema_props):
            kind = schema_props[self.arg].get("type")
            return f"{shown}: the tool's schema types {self.arg} {kind}, not {json_type(actual)}"
        return shown


@dataclass(frozen=True)
class Rule:
    text: str
    pattern: str
    read_only: bool
    constraints: tuple[Constraint, ...] = ()

    def covers(self, entry: ToolEntry, *, agent: bool) -> bool:
        if agent and entry.qualified in NEVER_GRANTABLE_TO_AGENTS:
            return False
        if self.read_only and entry.access != "read":
            return False
        return fnmatch.fnmatchcase(entry.qualified, self.pattern)

    def holds(self, entry: ToolEntry, arguments: Mapping[str, Any]) -> bool:
        props = entry.properties
        return all(c.holds(arguments, props) for c in self.constraints)

    def failures(self, entry: ToolEntry, arguments: Mapping[str, Any]) -> list[str]:
        return [f for c in self.constraints if (f := c.failure(arguments, entry.properties)) is not None]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def _split_constraints(body: str, rule: str) -> list[str]:
    parts, depth, quote, start, i = [], 0, False, 0, 0
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    if quote or depth:
        raise ConfigError(f"grant {rule!r}: unbalanced quotes or brackets", hint='quote strings with "..."')
    parts.append(body[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_constraint(text: str, rule: str) -> Constraint:
    head = _HEAD.match(text)
    if head is None:
        raise ConfigError(
            f"grant {rule!r}: cannot read constraint {text!r}",
            hint='write ARG OP VALUE, with OP one of ==, !=, in, ~, !~ (e.g. target == "preview")',
        )
    arg, op, literal = head["arg"], head["op"], text[head.end() :].strip()
    if op in ("~", "!~"):
        if len(literal) < 2 or literal[0] != '"' or literal[-1] != '"':
            raise ConfigError(
                f'grant {rule!r}: the regex in {text!r} must be "quoted"', hint='e.g. sql ~ "^select"'
            )
        source = literal[1:-1].replace('\\"', '"')
        try:
            regex = re.compile(source)
        except re.error as exc:
            raise ConfigError(f"grant {rule!r}: bad regex {source!r}: {exc}", hint="fix the pattern") from exc
        return Constraint(arg, op, source, text, regex, re.compile(source, re.IGNORECASE))
    try:
        value = json.loads(literal)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"grant {rule!r}: {literal!r} is not a JSON value", hint='quote strings: target == "preview"'
        ) from exc
    if op == "in" and not isinstance(value, list):
        raise ConfigError(
            f"grant {rule!r}: `in` needs a JSON list, got {literal!r}", hint='e.g. target in ["a", "b"]'
        )
    return Constraint(arg, op, value, text)


def parse_rule(text: str) -> Rule:
    match = _RULE.match(text.strip())
    if match is None or "." not in match["pattern"]:
        raise ConfigError(
            f"grant {text!r} is not of the form <upstream>.<tool>[:read][(constraints)]",
            hint='e.g. "sentry.*:read" or \'deploy.stage(target == "preview")\'',
        )
    body = match["body"]
    constraints = (
        () if body is None else tuple(_parse_constraint(c, text) for c in _split_constraints(body, text))
    )
    if body is not None and not constraints:
        raise ConfigError(f"grant {text!r}: empty constraint list", hint="drop the () or add a constraint")
    return Rule(text.strip(), match["pattern"], bool(match["read"]), constraints)


@functools.cache
def _allowed_types(names: tuple[str, ...]) -> tuple[type, ...] | None:
    """The Python types a JSON Schema `type` admits, or None when a name is not one corral knows.
    Cached: every call of a constrained tool checks its arguments' types (`Constraint._mistyped`)."""
    if any(n not in _JSON_TYPES for n in names):
        return None
    return tuple(t for n in names for t in _JSON_TYPES[n])


def _type_ok(value: Any, prop: Mapping[str, Any]) -> bool:
    kinds = prop.get("type")
    if kinds is None:
        return True
    allowed = _allowed_types(tuple(str(n) for n in (kinds if isinstance(kinds, list) else [kinds])))
    if allowed is None:
        return True  # not a JSON Schema type corral knows: nothing can be ruled out
    # bool is an int in Python, never in JSON Schema.
    return isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)


def _validate(rule: Rule, catalog: Catalog, agent: bool) -> list[ToolEntry]:
    is_glob = any(ch in rule.pattern for ch in "*?[")
    if agent and not is_glob and rule.pattern in NEVER_GRANTABLE_TO_AGENTS:
        raise ConfigError(
            f"grant {rule.text!r}: {rule.pattern} is never grantable to an agent token",
            hint="merges and promotions need a recorded human approval "
            "(`corral approve`, `corral deploy promote`)",
        )
    matched = [e for e in catalog.entries.values() if rule.covers(e, agent=agent)]
    if not matched:
        what = "read-class tool" if rule.read_only else "tool"
        raise ConfigError(
            f"grant {rule.text!r} matches no {what} of this gateway",
            hint="check the spelling against `corral gateway check`; classes come from [annotations]",
        )
    if rule.constraints:
        if is_glob:
            raise ConfigError(
                f"grant {rule.text!r}: argument constraints need one exact tool, not a glob",
                hint="write one constrained grant per tool",
            )
        entry = matched[0]
        for c in rule.constraints:
            prop = entry.properties.get(c.arg)
            if prop is None:
                known = ", ".join(sorted(entry.properties)) or "none"
                raise ConfigError(
                    f"grant {rule.text!r}: {entry.qualified} has no argument {c.arg!r} "
                    f"(its arguments: {known})",
                    hint="constrain an argument from the tool's inputSchema",
                )
            values = c.value if c.op == "in" else [] if c.op in ("~", "!~") else [c.value]
            if isinstance(prop, dict) and not all(_type_ok(v, prop) for v in values):
                raise ConfigError(
                    f"grant {rule.text!r}: {c.arg} is {prop.get('type')} in the schema; "
                    f"{c.value!r} can never match",
                    hint="use a literal of the argument's type",
                )
            if c.op in ("~", "!~") and isinstance(prop, dict) and prop.get("type") not in (None, "string"):
                raise ConfigError(
                    f"grant {rule.text!r}: {c.arg} is not a string; regexes need one", hint="use == or in"
                )
    return matched


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    agent: bool
    version: str
    schema_hashes: Mapping[str, str]
    """The schema hash each covered tool had when the policy was validated."""
    by_tool: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    """The rules covering each validated tool, in grant order: matched once, at compile time."""

    def rules_for(self, entry: ToolEntry) -> tuple[Rule, ...]:
        known = self.by_tool.get(entry.qualified)
        if known is not None:
            return known
        return tuple(r for r in self.rules if r.covers(entry, agent=self.agent))

    def covered(self, entry: ToolEntry) -> bool:
        return self.schema_hashes.get(entry.qualified) == entry.schema_hash and bool(self.rules_for(entry))

    def decide(self, qualified: str, entry: ToolEntry | None, arguments: Mapping[str, Any]) -> Decision:
        if entry is None:
            return Decision(False, "default-deny", f"no tool named {qualified} on this gateway")
        if self.agent and qualified in NEVER_GRANTABLE_TO_AGENTS:
            return Decision(
                False, "never-grantable", f"{qualified} needs a recorded human approval, not an agent token"
            )
        rules = self.rules_for(entry)
        if not rules:
            return Decision(False, "default-deny", f"no grant of this token covers {qualified}")
        validated = self.schema_hashes.get(qualified)
        if validated != entry.schema_hash:
            return Decision(
                False,
                "schema-changed",
                f"{qualified} changed its schema since the policy was validated; "
                "it is refused until re-validated",
                {"validated_hash": validated, "current_hash": entry.schema_hash},
            )
        for rule in rules:
            if rule.holds(entry, arguments):
                return Decision(True, rule.text, "granted")
        # Only a refusal pays for the explanation.
        failures = {rule.text: rule.failures(entry, arguments) for rule in rules}
        first = rules[0].text
        return Decision(False, first, "; ".join(failures[first]), {"failed": failures})


def compile_policy(grants: Iterable[str], catalog: Catalog, *, agent: bool = True) -> Policy:
    """Parse and validate grants against the catalog; ConfigError names the first bad rule."""
    rules = tuple(parse_rule(g) for g in grants)
    hashes: dict[str, str] = {}
    by_tool: dict[str, list[Rule]] = {}
    for rule in rules:
        for entry in _validate(rule, catalog, agent):
            hashes[entry.qualified] = entry.schema_hash
            by_tool.setdefault(entry.qualified, []).append(rule)
    doc = {"rules": [r.text for r in rules], "agent": agent, "tools": hashes}
    version = hashlib.sha256(rfc8785.dumps(cast(Any, doc))).hexdigest()[:16]
    return Policy(rules, agent, version, hashes, {k: tuple(v) for k, v in by_tool.items()})


def argument_shape(entry: ToolEntry) -> dict[str, str]:
    """`{arg: "type"}` with `?` for optional arguments: what `corral gateway check` prints."""
    shape = {}
    for name, prop in entry.properties.items():
        kind = prop.get("type", "any") if isinstance(prop, dict) else "any"
        shape[name] = (
            f"{kind if isinstance(kind, str) else '|'.join(kind)}{'' if name in entry.required else '?'}"
        )
    return shape
