"""The vault provider against a real OpenBao dev server (started by .ci/services.sh): KV v2 reads with
a token and with AppRole, a deleted latest version, a missing key, a token without the policy."""

from __future__ import annotations

from collections.abc import Iterator

import hvac
import pytest

from corral.errors import ConfigError
from corral.secrets import resolve_reference
from tests.conftest import require_env


@pytest.fixture(scope="module")
def bao() -> Iterator[hvac.Client]:
    client = hvac.Client(url=require_env("CORRAL_TEST_BAO_ADDR"), token=require_env("CORRAL_TEST_BAO_TOKEN"))
    assert client.is_authenticated()
    kv = client.secrets.kv.v2
    kv.create_or_update_secret(path="corral-test/shop", secret={"db_url": "postgres://u:vault-pw-42@db/shop"})
    kv.create_or_update_secret(path="corral-test/gone", secret={"k": "deleted-value-1"})
    kv.delete_latest_version_of_secret(path="corral-test/gone")
    client.sys.create_or_update_policy(
        "corral-test-read-shop", 'path "secret/data/corral-test/shop" { capabilities = ["read"] }'
    )
    yield client
    kv.delete_metadata_and_all_versions(path="corral-test/shop")
    kv.delete_metadata_and_all_versions(path="corral-test/gone")


def _env(client: hvac.Client, **extra: str) -> dict[str, str]:
    return {"VAULT_ADDR": client.url, **extra}


def test_token_auth_reads_one_key_of_a_kv2_secret(bao: hvac.Client) -> None:
    env = _env(bao, VAULT_TOKEN=bao.token)
    assert (
        resolve_reference("DB", "vault:secret/corral-test/shop#db_url", env)
        == "postgres://u:vault-pw-42@db/shop"
    )
    # OpenBao's own variable names work as well.
    bao_env = {"BAO_ADDR": bao.url, "BAO_TOKEN": bao.token}
    assert resolve_reference("DB", "vault:secret/corral-test/shop#db_url", bao_env).endswith("@db/shop")


def test_approle_auth_from_the_environment(bao: hvac.Client) -> None:
    if "corral-approle/" not in bao.sys.list_auth_methods():
        bao.sys.enable_auth_method("approle", path="corral-approle")
    bao.auth.approle.create_or_update_approle(
        "corral-test", token_policies=["corral-test-read-shop"], mount_point="corral-approle"
    )
    role_id = bao.auth.approle.read_role_id("corral-test", mount_point="corral-approle")["data"]["role_id"]
    secret_id = bao.auth.approle.generate_secret_id("corral-test", mount_point="corral-approle")["data"][
        "secret_id"
    ]
    env = _env(bao, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id, VAULT_APPROLE_MOUNT="corral-approle")
    assert resolve_reference("DB", "vault:secret/corral-test/shop#db_url", env).startswith("postgres://")
    with pytest.raises(ConfigError, match=r"AppRole login .* failed"):
        resolve_reference("DB", "vault:secret/corral-test/shop#db_url", {**env, "VAULT_SECRET_ID": "wrong"})
    # The role's policy reads only the shop secret.
    with pytest.raises(ConfigError, match="may not read secret/corral-test/gone"):
        resolve_reference("X", "vault:secret/corral-test/gone#k", env)


def test_deleted_version_missing_path_and_missing_key_fail_clearly(bao: hvac.Client) -> None:
    env = _env(bao, VAULT_TOKEN=bao.token)
    with pytest.raises(ConfigError, match="no KV v2 secret at secret/corral-test/gone"):
        resolve_reference("X", "vault:secret/corral-test/gone#k", env)
    with pytest.raises(ConfigError, match="no KV v2 secret at secret/corral-test/nothing"):
        resolve_reference("X", "vault:secret/corral-test/nothing#k", env)
    with pytest.raises(ConfigError, match="has no string key 'password'") as missing:
        resolve_reference("X", "vault:secret/corral-test/shop#password", env)
    assert missing.value.hint == "its keys are: db_url"
    assert "vault-pw-42" not in str(missing.value)


def test_missing_credentials_and_unreachable_server(bao: hvac.Client) -> None:
    with pytest.raises(ConfigError, match="VAULT_ADDR is not set"):
        resolve_reference("X", "vault:secret/corral-test/shop#db_url", {"VAULT_TOKEN": "t"})
    with pytest.raises(ConfigError, match="no Vault credentials"):
        resolve_reference("X", "vault:secret/corral-test/shop#db_url", _env(bao))
    with pytest.raises(ConfigError, match="may not read"):
        resolve_reference("X", "vault:secret/corral-test/shop#db_url", _env(bao, VAULT_TOKEN="not-a-token"))
    closed = {"VAULT_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": "t"}
    with pytest.raises(
        ConfigError, match="reading secret/corral-test/shop from Vault failed: ConnectionError"
    ):
        resolve_reference("X", "vault:secret/corral-test/shop#db_url", closed)
