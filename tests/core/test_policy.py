from corral.agent.policy import PathPolicy
from corral.paths import PathRules

POLICY = PathPolicy("/workspace", ("billing/**", "migrations/prod/**"), ("secrets/**", ".env"))


def test_globs_cover_the_directory_and_its_contents() -> None:
    assert PathRules(["billing/**"]).matches("billing", is_dir=True)
    assert PathRules(["billing/**"]).matches("billing/rates.py")
    assert PathRules([".env"]).matches(".env")
    assert not PathRules(["billing/**"]).matches("billingx/rates.py")
    assert not PathRules([".env"]).matches("src/.envrc")


def test_edit_of_a_readonly_path_is_denied_with_the_rule() -> None:
    decision = POLICY.decide("Edit", {"file_path": "/workspace/billing/rates.py"})
    assert not decision.allowed
    assert decision.rule == "readonly_paths"


def test_reading_a_readonly_path_is_allowed() -> None:
    assert POLICY.decide("Read", {"file_path": "/workspace/billing/rates.py"}).allowed


def test_reading_a_hidden_path_is_denied() -> None:
    decision = POLICY.decide("Read", {"file_path": "/workspace/secrets/prod.key"})
    assert not decision.allowed and decision.rule == "hidden_paths"
    assert not POLICY.decide("Grep", {"pattern": "x", "path": "/workspace/.env"}).allowed


def test_relative_and_dotted_paths_are_normalised() -> None:
    assert not POLICY.decide("Write", {"file_path": "/workspace/src/../billing/x.py"}).allowed
    assert not POLICY.decide("Write", {"file_path": "billing/x.py"}).allowed


def test_writes_outside_the_workspace_are_denied() -> None:
    decision = POLICY.decide("Write", {"file_path": "/etc/passwd"})
    assert not decision.allowed and decision.rule == "workspace"


def test_ordinary_edits_pass() -> None:
    assert POLICY.decide("Edit", {"file_path": "/workspace/calc/ops.py"}).allowed
    assert POLICY.decide("Bash", {"command": "cat billing/rates.py"}).allowed


def test_a_glob_without_a_slash_is_denied_at_any_depth_as_the_mounts_mask_it() -> None:
    policy = PathPolicy("/workspace", (), ("*.pem",))
    for path in ("/workspace/root.pem", "/workspace/certs/server.pem", "/workspace/a/b/c.pem"):
        decision = policy.decide("Read", {"file_path": path})
        assert not decision.allowed and decision.rule == "hidden_paths", path
    assert policy.decide("Read", {"file_path": "/workspace/certs/server.pem.txt"}).allowed


def test_a_directory_argument_under_a_protected_directory_pattern_is_denied() -> None:
    assert not POLICY.decide("LS", {"path": "/workspace/secrets"}).allowed
    assert not POLICY.decide("Write", {"file_path": "/workspace/billing"}).allowed
