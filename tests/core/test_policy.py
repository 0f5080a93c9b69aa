from corral.agent.policy import PathPolicy
from corral.workspace import matches_any

POLICY = PathPolicy("/workspace", ("billing/**", "migrations/prod/**"), ("secrets/**", ".env"))


def test_globs_cover_the_directory_and_its_contents() -> None:
    assert matches_any("billing", ("billing/**",))
    assert matches_any("billing/rates.py", ("billing/**",))
    assert matches_any(".env", (".env",))
    assert not matches_any("billingx/rates.py", ("billing/**",))
    assert not matches_any("src/.envrc", (".env",))


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
