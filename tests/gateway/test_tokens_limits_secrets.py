"""Tokens, rate-limit buckets, secrets providers and redaction, the local forge and deploy: no servers."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from corral.audit.redact import Redactor
from corral.deploy.local import LocalDeploy
from corral.errors import ConfigError, RunError, TokenRefused, WorkspaceError
from corral.events import SecretRequested
from corral.forge import Check
from corral.forge.local import LocalForge
from corral.gateway.ratelimit import Bucket, RateLimitConfig, RateLimiter
from corral.gateway.tokens import InMemoryTokenStore, TokenAuthority
from corral.secrets import SecretResolver
from tests.gateway.conftest import MemorySink


def test_tokens_verify_only_while_valid_and_store_no_secret() -> None:
    store = InMemoryTokenStore()
    authority = TokenAuthority(store, "gw")
    token, record = authority.mint(run_id="r", grants=["forge.comment"], ttl_seconds=60, max_uses=1)
    assert authority.verify(token).token_id == record.token_id
    assert token.split("_", 2)[2] not in store.get(record.token_id).model_dump_json()  # type: ignore[union-attr]
    with pytest.raises(TokenRefused) as tampered:
        authority.verify(token[:-2] + "xx")
    assert tampered.value.reason == "unknown"
    assert authority.verify(token, now=record.expires_at - 1)
    with pytest.raises(TokenRefused) as late:
        authority.verify(token, now=record.expires_at)
    assert late.value.reason == "expired"
    assert store.consume(record.token_id).uses == 1
    with pytest.raises(TokenRefused) as spent:
        store.consume(record.token_id)
    assert spent.value.reason == "exhausted"
    with pytest.raises(TokenRefused) as foreign:
        TokenAuthority(store, "other-gw").verify(token)
    assert foreign.value.reason == "wrong_audience"
    authority.revoke(record.token_id)
    with pytest.raises(TokenRefused) as revoked:
        authority.verify(token)
    assert revoked.value.reason == "revoked"


def test_token_buckets_refill_at_their_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimitConfig(per_token=Bucket(rate=1.0, burst=2)), clock=lambda: now[0])
    assert limiter.check("t", "a.b") is None and limiter.check("t", "a.c") is None
    limited = limiter.check("t", "a.b")
    assert limited is not None and limited[0] == "rate-limit:token" and limited[1] == pytest.approx(1.0)
    assert limiter.check("other", "a.b") is None  # buckets are per token
    now[0] = 1.0
    assert limiter.check("t", "a.b") is None


def test_secrets_resolve_from_env_and_file_and_audit_the_name_only(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("file-secret-value\n")
    sink = MemorySink()
    resolver = SecretResolver(
        {"A": "env:MY_A", "B": f"file:{tmp_path / 'tok'}"}, sink, {"MY_A": "env-secret-value"}
    )
    assert resolver.get("A", requester="gateway") == "env-secret-value"
    assert resolver.get("B") == "file-secret-value"
    events = sink.of(SecretRequested)
    assert [(e.name, e.provider, e.requester) for e in events] == [("A", "env", "gateway"), ("B", "file", "")]
    assert "secret-value" not in sink.dump()
    assert sink.secrets == {"A": "env-secret-value", "B": "file-secret-value"}
    for bad, message in [("C", "is not declared"), ("D", "is not set"), ("E", "cannot read")]:
        refs = {"D": "env:NOPE_NOT_SET", "E": f"file:{tmp_path / 'missing'}"}
        with pytest.raises(ConfigError, match=message):
            SecretResolver(refs, None, {}).get(bad)


def test_redactor_scrubs_plain_base64_and_url_encoded_forms() -> None:
    redactor = Redactor()
    redactor.register("K", "p@ss/word+1")
    encoded = base64.b64encode(b"p@ss/word+1").decode()
    out = redactor.redact({"a": "x p@ss/word+1 y", "b": [encoded, "p%40ss%2Fword%2B1"], "p@ss/word+1": 3})
    assert out == {"a": "x [secret:K] y", "b": ["[secret:K]", "[secret:K]"], "[secret:K]": 3}


def test_local_forge_records_prs_and_refuses_agent_merges(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "base"], check=True)
    subprocess.run([*git, "checkout", "-q", "-b", "corral/r1"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "change"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run([*git, "checkout", "-q", "main"], check=True)
    forge = LocalForge(tmp_path / "forge")
    pr = forge.open_pull_request(repo, head="corral/r1", base="main", title="T", body="B", author="agent:r1")
    forge.comment(pr.number, body="looks good", author="human:ann")
    forge.record_check(pr.number, Check(name="pytest", status="passed"))
    assert [c.status for c in LocalForge(tmp_path / "forge").list_checks(pr.number)] == ["passed"]
    with pytest.raises(WorkspaceError, match="not a human approver"):
        forge.merge(pr.number, approver="agent:r1", sha=head)
    merged = forge.merge(pr.number, approver="human:ann", sha=head)
    assert merged.state == "merged"
    parents = subprocess.run(
        [*git, "rev-parse", "main^1", "main^2"], check=True, capture_output=True, text=True
    )
    assert parents.stdout.split()[1] == head and merged.merge_commit
    with pytest.raises(WorkspaceError, match="not a git repository"):
        forge.open_pull_request(tmp_path, head="h", base="main", title="T", body="", author="a")


def test_local_deploy_stages_and_promotes_only_for_humans(tmp_path: Path) -> None:
    deploy = LocalDeploy(tmp_path / "deploy")
    dep = deploy.stage(run_id="r1", ref="corral/r1", target="preview")
    with pytest.raises(RunError, match="not a staging target"):
        deploy.stage(run_id="r1", ref="x", target="production")
    with pytest.raises(RunError, match="not a human approver"):
        deploy.promote(dep.id, approver="agent")
    promoted = deploy.promote(dep.id, approver="human:ann")
    assert (promoted.state, promoted.promoted_by) == ("promoted", "human:ann")
    assert [d.state for d in LocalDeploy(tmp_path / "deploy").list("r1")] == ["promoted"]
