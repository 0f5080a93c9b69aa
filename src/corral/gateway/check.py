"""The dry run behind `corral gateway check`: which tools, and which argument shapes, a grant set allows."""

from __future__ import annotations

import anyio
from pydantic import BaseModel

from corral.errors import CorralError
from corral.gateway.catalog import NEVER_GRANTABLE_TO_AGENTS, claude_code_name
from corral.gateway.policy import argument_shape
from corral.gateway.server import Gateway


class AllowedTool(BaseModel):
    tool: str
    claude_code_name: str
    access: str
    rules: list[str]
    arguments: dict[str, str]
    """`{arg: type}`, `?` marking optional arguments."""
    constraints: list[str]


class GrantReport(BaseModel):
    grants: list[str]
    policy_version: str
    allowed: list[AllowedTool]
    never_grantable: list[str]
    unavailable_upstreams: dict[str, str]


def report(gateway: Gateway, grants: list[str], *, agent: bool = True) -> GrantReport:
    """Validate `grants` against the gateway's tools (ConfigError names a bad rule) and describe them."""
    policy = gateway.policy(grants, agent=agent)
    allowed = []
    for entry in gateway.catalog().entries.values():
        rules = [r for r in policy.rules if r.covers(entry, agent=agent)]
        if not rules or not policy.covered(entry):
            continue
        # A rule without constraints allows any arguments; otherwise list what must hold.
        constraints = (
            [] if any(not r.constraints for r in rules) else [c.text for r in rules for c in r.constraints]
        )
        allowed.append(
            AllowedTool(
                tool=entry.qualified,
                claude_code_name=claude_code_name(entry.qualified),
                access=entry.access,
                rules=[r.text for r in rules],
                arguments=argument_shape(entry),
                constraints=constraints,
            )
        )
    return GrantReport(
        grants=grants,
        policy_version=policy.version,
        allowed=sorted(allowed, key=lambda t: t.tool),
        never_grantable=sorted(NEVER_GRANTABLE_TO_AGENTS & set(gateway.catalog().entries)) if agent else [],
        unavailable_upstreams=dict(gateway.start_errors),
    )


def check_grants(gateway: Gateway, grants: list[str], *, agent: bool = True) -> GrantReport:
    """Start the gateway's upstreams just long enough to read their tools, then report."""

    async def main() -> GrantReport | CorralError:
        outcome: GrantReport | CorralError
        async with anyio.create_task_group() as tg:
            try:
                await gateway.start(tg)
                try:
                    outcome = report(gateway, grants, agent=agent)
                except CorralError as exc:  # raised below, outside the task group, so it stays itself
                    outcome = exc
            finally:
                await gateway.aclose()
                tg.cancel_scope.cancel()
        return outcome

    outcome = anyio.run(main)
    if isinstance(outcome, CorralError):
        raise outcome
    return outcome
