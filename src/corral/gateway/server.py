"""The gateway core: per-token tool listing, and tools/call through rate limits, policy and audit.

Cross-cutting concerns sit in one place around the upstream call, in this order: token use count,
rate limits, policy decision (audited durably before anything runs), upstream call with timeout,
result redaction, call audit. A refusal is a normal MCP tool result with `isError: true` and a JSON
body naming the rule and the reason, so the agent can adapt instead of retrying blindly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
import rfc8785
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from corral.audit import EventSink
from corral.audit.redact import Redactor
from corral.errors import ConfigError, TokenRefused, UpstreamFailure
from corral.events import GatewayCall, GatewayDecision
from corral.gateway.catalog import Catalog, ToolEntry
from corral.gateway.config import Access
from corral.gateway.policy import Decision, Policy, compile_policy
from corral.gateway.ratelimit import RateLimitConfig, RateLimiter
from corral.gateway.tokens import TokenAuthority, TokenRecord
from corral.gateway.tools import RUN_SCOPE_RULE, BuiltinUpstream, RunBinding
from corral.gateway.upstreams import Caller, Upstream

log = logging.getLogger(__name__)

TOKEN_STATE_KEY = "corral_token"


def arguments_hash(redacted: Mapping[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(dict(redacted))).hexdigest()


def _json_result(payload: dict[str, Any], *, is_error: bool) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(payload, sort_keys=True))], is_error=is_error
    )


def deny_result(tool: str, decision: Decision, policy_version: str) -> types.CallToolResult:
    payload = {
        "denied": True,
        "tool": tool,
        "rule": decision.rule,
        "reason": decision.reason,
        "policy_version": policy_version,
        **decision.details,
    }
    return _json_result(payload, is_error=True)


class Gateway:
    def __init__(
        self,
        *,
        authority: TokenAuthority,
        upstreams: Iterable[Upstream],
        annotations: Mapping[str, Access] | None = None,
        rate_limits: RateLimitConfig | None = None,
        redactor: Redactor | None = None,
        default_sink: EventSink | None = None,
    ) -> None:
        self.authority = authority
        self.upstreams: dict[str, Upstream] = {u.name: u for u in upstreams}
        self.annotations = dict(annotations or {})
        self.limiter = RateLimiter(rate_limits or RateLimitConfig())
        self.redactor = redactor or Redactor()
        self.default_sink = default_sink
        self.bindings: dict[str, RunBinding] = {}
        self.sinks: dict[str, EventSink] = {}
        self.start_errors: dict[str, str] = {}
        self._catalog: tuple[tuple[int, ...], Catalog] | None = None
        self._policies: dict[tuple[tuple[str, ...], bool], Policy] = {}
        self._builtin_access: dict[str, Access] = {}
        for upstream in self.upstreams.values():
            if isinstance(upstream, BuiltinUpstream):
                self._builtin_access.update(upstream.access())

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start every upstream concurrently. One that fails is recorded and retried in the background;
        a grant naming its tools then fails validation with the reason."""

        async def start_one(upstream: Upstream) -> None:
            try:
                await upstream.start(tg)
            except UpstreamFailure as exc:
                self.start_errors[upstream.name] = str(exc)
                log.warning("upstream %s did not start: %s", upstream.name, exc)

        async with anyio.create_task_group() as starters:
            for upstream in self.upstreams.values():
                starters.start_soon(start_one, upstream)

    async def aclose(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.aclose()

    def register_run(self, binding: RunBinding, sink: EventSink | None) -> None:
        self.bindings[binding.run_id] = binding
        if sink is not None:
            self.sinks[binding.run_id] = sink

    def forget_run(self, run_id: str) -> None:
        self.bindings.pop(run_id, None)
        self.sinks.pop(run_id, None)

    # ---- catalog and policy ----------------------------------------------------------------

    def catalog(self) -> Catalog:
        generations = tuple(u.generation for u in self.upstreams.values())
        if self._catalog is None or self._catalog[0] != generations:
            tools = {name: u.tools() for name, u in self.upstreams.items()}
            self._catalog = (generations, Catalog.build(tools, self.annotations, self._builtin_access))
        return self._catalog[1]

    def policy(self, grants: Iterable[str], *, agent: bool = True) -> Policy:
        """The compiled policy for a grant set (cached). ConfigError names a bad rule."""
        key = (tuple(grants), agent)
        policy = self._policies.get(key)
        if policy is None:
            try:
                policy = compile_policy(key[0], self.catalog(), agent=agent)
            except ConfigError as exc:
                down = "; ".join(f"upstream {n} is unavailable: {e}" for n, e in self.start_errors.items())
                if down:
                    raise ConfigError(exc.message, hint=f"{down}. {exc.hint or ''}".strip()) from exc
                raise
            self._policies[key] = policy
        return policy

    def revalidate(self) -> None:
        """Forget every compiled policy: the next use validates against the tools as they are now."""
        self._policies.clear()

    def policy_for(self, record: TokenRecord) -> Policy:
        return self.policy(record.grants, agent=record.principal == "agent")

    def sink_for(self, run_id: str) -> EventSink | None:
        return self.sinks.get(run_id, self.default_sink)

    # ---- MCP handlers ----------------------------------------------------------------------

    def visible_tools(self, record: TokenRecord) -> list[ToolEntry]:
        policy = self.policy_for(record)
        return [e for e in self.catalog().entries.values() if policy.covered(e)]

    async def list_tools(self, record: TokenRecord) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[e.listed() for e in self.visible_tools(record)])

    def _emit(self, run_id: str, event: GatewayDecision | GatewayCall, *, durable: bool = False) -> None:
        sink = self.sink_for(run_id)
        if sink is None:
            log.warning("no audit sink for run %s: %s dropped", run_id, event.kind)
            return
        sink.emit(event, durable=durable)

    def audit_rejected_token(self, rejected: TokenRefused, token_id: str = "") -> None:
        """A 401: recorded on the token's run when it can be attributed (expired, revoked, ...), else on
        this gateway's own chain (a run's gateway: that run), with the token's public id if it has one,
        so another run's token, or one kept after its run, is on the record of the run it was tried in."""
        record = rejected.record
        if record is None:
            if self.default_sink is not None:
                why = "no token of this gateway; refused with 401 before any upstream call"
                event = dict(token_id=token_id, tool_name="", allowed=False, rule=f"token:{rejected.reason}")
                self.default_sink.emit(
                    GatewayDecision.model_validate(event | {"reason": f"token {rejected.reason}: {why}"})
                )
            return
        self._emit(
            record.run_id,
            GatewayDecision.model_validate(
                dict(
                    token_id=record.token_id,
                    tool_name="",
                    allowed=False,
                    rule=f"token:{rejected.reason}",
                    reason=f"token {rejected.reason}; request refused with 401 before any upstream call",
                )
            ),
        )

    async def call_tool(
        self, record: TokenRecord, exposed: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        upstream_name = exposed.partition("_")[0]
        pending = self.upstreams.get(upstream_name)
        if pending is not None and pending.generation > 0:
            # A restarting upstream may come back with other schemas: decide on the tools it serves now.
            # (One that never started has no tools, so nothing can be granted on it: no wait.)
            with contextlib.suppress(UpstreamFailure):
                await pending.ready()
        generation = pending.generation if pending is not None else None
        entry = self.catalog().by_exposed.get(exposed)
        tool = entry.qualified if entry else exposed
        redacted = self.redactor.redact(arguments)
        args_hash = arguments_hash(redacted)
        decision = await self._decide(record, tool, entry, arguments)
        policy_version = self.policy_for(record).version
        # Durable before the upstream runs: an acknowledged call is never lost (invariant 4).
        self._emit(
            record.run_id,
            GatewayDecision.model_validate(
                dict(
                    token_id=record.token_id,
                    tool_name=tool,
                    allowed=decision.allowed,
                    rule=decision.rule,
                    reason=decision.reason,
                    policy_version=policy_version,
                    arguments_hash=args_hash,
                )
            ),
            durable=True,
        )
        if not decision.allowed or entry is None:
            result = deny_result(tool, decision, policy_version)
            self._emit_call(record, tool, redacted, args_hash, "denied", result, 0.0)
            return result
        upstream = self.upstreams[entry.upstream]
        caller = Caller(record.token_id, record.run_id, record.principal)
        started = time.perf_counter()
        try:
            result = await upstream.call(entry.name, arguments, caller, generation)
            outcome = "error" if result.is_error else "ok"
        except UpstreamFailure as exc:
            result = _json_result({"error": exc.kind, "tool": tool, "message": str(exc)}, is_error=True)
            outcome = exc.kind
        upstream_ms = (time.perf_counter() - started) * 1000.0
        result = self._redact_result(result)
        self._emit_call(record, tool, redacted, args_hash, outcome, result, upstream_ms)
        return result

    async def _decide(
        self, record: TokenRecord, tool: str, entry: ToolEntry | None, arguments: dict[str, Any]
    ) -> Decision:
        """Rate limits first (they also slow a flood of refused calls), then the policy, then the run
        scope of a built-in tool's arguments, and a use is counted only for a call that will reach its
        upstream."""
        limited = self.limiter.check(record.token_id, tool)
        if limited is not None:
            rule, wait = limited
            return Decision(
                False, rule, f"rate limit reached; retry in {wait:.2f}s", {"retry_after_s": round(wait, 3)}
            )
        decision = self.policy_for(record).decide(tool, entry, arguments)
        upstream = self.upstreams.get(entry.upstream) if entry is not None else None
        if decision.allowed and entry is not None and isinstance(upstream, BuiltinUpstream):
            caller = Caller(record.token_id, record.run_id, record.principal)
            refusal = await upstream.out_of_scope(entry.name, arguments, caller)
            if refusal is not None:
                return Decision(False, RUN_SCOPE_RULE, refusal, {"run_id": record.run_id})
        if decision.allowed:
            try:
                self.authority.store.consume(record.token_id)
            except TokenRefused as exc:
                return Decision(False, f"token:{exc.reason}", "this token has no uses left")
        return decision

    def _redact_result(self, result: types.CallToolResult) -> types.CallToolResult:
        if not self.redactor.active:
            return result
        data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        clean = self.redactor.redact(data)
        return result if clean == data else types.CallToolResult.model_validate(clean)

    def _emit_call(
        self,
        record: TokenRecord,
        tool: str,
        redacted: Mapping[str, Any],
        args_hash: str,
        outcome: str,
        result: types.CallToolResult,
        upstream_ms: float,
    ) -> None:
        size = len(result.model_dump_json(by_alias=True, exclude_none=True))
        entry = self.catalog().entries.get(tool)
        self._emit(
            record.run_id,
            GatewayCall.model_validate(
                dict(
                    token_id=record.token_id,
                    tool_name=tool,
                    arguments=dict(redacted),
                    arguments_hash=args_hash,
                    outcome=outcome,
                    access=entry.access if entry is not None else "",
                    result_bytes=size,
                    upstream_ms=round(upstream_ms, 3),
                )
            ),
        )

    def mcp_server(self) -> Server[Any]:
        async def on_list_tools(
            ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
        ) -> types.ListToolsResult:
            return await self.list_tools(_record_of(ctx))

        async def on_call_tool(
            ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
        ) -> types.CallToolResult:
            return await self.call_tool(_record_of(ctx), params.name, dict(params.arguments or {}))

        return Server("corral", version="0.1.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def _record_of(ctx: ServerRequestContext[Any]) -> TokenRecord:
    request = ctx.request
    record = (
        getattr(request, "scope", {}).get("state", {}).get(TOKEN_STATE_KEY) if request is not None else None
    )
    if not isinstance(record, TokenRecord):
        # Unreachable through the HTTP app (the guard answers 401 first); refuse rather than guess.
        raise TokenRefused("no verified capability token on this request", reason="malformed")
    return record
