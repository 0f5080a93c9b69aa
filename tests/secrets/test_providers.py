"""Secret providers: env, file, cmd, Vercel (against a loopback fake in the documented shapes), and the
resolver's audit trail. The vault provider has its own file, against a real OpenBao server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from corral.config import parse_config
from corral.errors import ConfigError
from corral.events import SecretRequested
from corral.secrets import SecretResolver, resolve_reference
from corral.secrets import command as command_provider
from tests.gateway.conftest import MemorySink
from tests.secrets.fake_vercel import FakeVercel, fake_vercel

PY = sys.executable


def test_cmd_provider_returns_stdout_without_the_trailing_newline() -> None:
    ref = f"cmd:{PY} -c \"print('from-a-password-manager')\""
    assert resolve_reference("S", ref, {}) == "from-a-password-manager"


def test_cmd_provider_runs_with_corrals_environment_and_no_shell(tmp_path: Path) -> None:
    ref = f"cmd:{PY} -c \"import os; print(os.environ['PM_SESSION'] + ';' + 'x')\""
    assert resolve_reference("S", ref, {"PM_SESSION": "unlocked-session"}) == "unlocked-session;x"
    marker = tmp_path / "pwned"
    # With a shell, `;` would run the second command; without one it is an argument of echo.
    assert resolve_reference("S", f"cmd:echo safe-value ; touch {marker}", {"PATH": "/usr/bin:/bin"})
    assert not marker.exists()


def test_cmd_provider_fails_clearly_without_echoing_its_output(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = f"cmd:{PY} -c \"import sys; print('half-secret-value', file=sys.stderr); sys.exit(3)\""
    with pytest.raises(ConfigError, match="exited with status 3") as failed:
        resolve_reference("S", leaky, {})
    assert "half-secret-value" not in str(failed.value) + failed.value.hint
    with pytest.raises(ConfigError, match="not found"):
        resolve_reference("S", "cmd:/nonexistent/pm read x", {})
    with pytest.raises(ConfigError, match="printed nothing"):
        resolve_reference("S", f"cmd:{PY} -c pass", {})
    monkeypatch.setattr(command_provider, "COMMAND_TIMEOUT_SECONDS", 0.5)
    with pytest.raises(ConfigError, match="did not finish"):
        resolve_reference("S", f'cmd:{PY} -c "import time; time.sleep(30)"', {})


def _vercel(token: str = "vercel-token-123") -> FakeVercel:
    return FakeVercel(
        token=token,
        team_id="team_abc",
        projects={
            "prj_shop": [
                {
                    "id": "env1",
                    "key": "DATABASE_URL",
                    "type": "encrypted",
                    "target": ["preview"],
                    "value": "postgres://preview-only",
                },
                {
                    "id": "env2",
                    "key": "DATABASE_URL",
                    "type": "encrypted",
                    "target": ["production"],
                    "value": "postgres://prod-db-password",
                },
                {"id": "env3", "key": "LEGACY", "type": "secret", "target": ["production"], "value": "x" * 8},
                {
                    "id": "env4",
                    "key": "HIDDEN",
                    "type": "sensitive",
                    "target": ["production"],
                    "value": "y" * 8,
                },
            ]
        },
    )


def test_vercel_provider_lists_then_decrypts_the_production_variable() -> None:
    with fake_vercel(_vercel()) as fake:
        env = {"VERCEL_TOKEN": fake.token, "VERCEL_TEAM_ID": "team_abc", "VERCEL_API_URL": fake.url}
        assert resolve_reference("DB", "vercel:prj_shop/DATABASE_URL", env) == "postgres://prod-db-password"
        assert fake.requests == ["/v10/projects/prj_shop/env", "/v1/projects/prj_shop/env/env2"]
        preview = {**env, "VERCEL_TARGET": "preview"}
        assert resolve_reference("DB", "vercel:prj_shop/DATABASE_URL", preview) == "postgres://preview-only"


def test_vercel_provider_errors_say_what_is_wrong() -> None:
    with fake_vercel(_vercel()) as fake:
        env = {"VERCEL_TOKEN": fake.token, "VERCEL_TEAM_ID": "team_abc", "VERCEL_API_URL": fake.url}
        for key in ("LEGACY", "HIDDEN"):
            with pytest.raises(ConfigError, match="whose value the API never returns"):
                resolve_reference("S", f"vercel:prj_shop/{key}", env)
        assert "/v1/projects/prj_shop/env/env3" not in fake.requests  # not even asked
        with pytest.raises(ConfigError, match="has no environment variable 'NOPE'"):
            resolve_reference("S", "vercel:prj_shop/NOPE", env)
        with pytest.raises(ConfigError, match="has no /v10/projects/prj_other/env"):
            resolve_reference("S", "vercel:prj_other/DATABASE_URL", env)
        with pytest.raises(ConfigError, match="refused the token"):
            resolve_reference("S", "vercel:prj_shop/DATABASE_URL", {**env, "VERCEL_TOKEN": "wrong-token"})
        with pytest.raises(ConfigError, match="VERCEL_TOKEN is not set"):
            resolve_reference("S", "vercel:prj_shop/DATABASE_URL", {"VERCEL_API_URL": fake.url})
        with pytest.raises(ConfigError, match="is not PROJECT/KEY"):
            resolve_reference("S", "vercel:prj_shop", env)


def test_resolver_fetches_once_audits_every_use_and_registers_redaction() -> None:
    sink = MemorySink()
    with fake_vercel(_vercel()) as fake:
        env = {"VERCEL_TOKEN": fake.token, "VERCEL_TEAM_ID": "team_abc", "VERCEL_API_URL": fake.url}
        resolver = SecretResolver({"DB": "vercel:prj_shop/DATABASE_URL"}, sink, env)
        resolver.check("DB")
        assert sink.of(SecretRequested) == []  # checking is not handing it to anyone
        assert (
            resolver.get("DB", requester="checks", purpose="env DATABASE_URL")
            == "postgres://prod-db-password"
        )
        assert resolver.get("DB", requester="gateway", purpose="upstream credential")
        assert len(fake.requests) == 2  # one listing, one decryption: the value is kept in memory
    requested = [(e.name, e.provider, e.requester, e.purpose) for e in sink.of(SecretRequested)]
    assert requested == [
        ("DB", "vercel", "checks", "env DATABASE_URL"),
        ("DB", "vercel", "gateway", "upstream credential"),
    ]
    assert sink.secrets == {"DB": "postgres://prod-db-password"}
    assert "prod-db-password" not in sink.dump()


def test_unknown_provider_and_malformed_references_are_config_errors() -> None:
    for ref in ("op:thing", "vault:", "plain-value", "VAULT:secret/x#y"):
        with pytest.raises(ConfigError, match="names no known provider"):
            resolve_reference("S", ref, {})
    for ref in ("vault:secret#key", "vault:secret/path", "vault:/path#"):
        with pytest.raises(ConfigError, match="is not MOUNT/PATH#KEY"):
            resolve_reference("S", ref, {"VAULT_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": "t"})


def test_config_declares_where_each_secret_may_go(tmp_path: Path) -> None:
    config = parse_config(
        """
[secrets]
SHOP_TOKEN = "env:SHOP_TOKEN"

[secrets.DATABASE_URL]
ref = "vault:secret/shop/db#url"
to = ["checks"]

[secrets.NPM_TOKEN]
ref = "cmd:pass show npm"
to = []
expose = "agent"
""",
        "corral.toml",
    )
    assert config.secret_refs("gateway") == {"SHOP_TOKEN": "env:SHOP_TOKEN"}
    assert config.secret_refs("checks") == {"DATABASE_URL": "vault:secret/shop/db#url"}
    assert config.agent_secrets() == {"NPM_TOKEN": "cmd:pass show npm"}
    for bad, message in [
        ('[secrets]\nX = "op:thing"', "names no known provider"),
        ('[secrets.X]\nref = "env:X"\nto = ["agent"]', "to"),
        ('[secrets.X]\nref = "env:X"\nexpose = "everyone"', "expose"),
        ('[secrets.X]\nref = "env:X"\nenv = "1BAD"', "not an environment variable name"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(bad, "corral.toml")
