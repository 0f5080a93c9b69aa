"""`corral.__all__` is the public API: every name resolves, and importing the package loads nothing.

As httpx does, the test keeps `__all__` honest in both directions: each exported name is importable
from `corral`, and each is defined in corral's own modules (not a re-exported third-party object).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import corral

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("name", sorted(set(corral.__all__) - {"__version__"}))
def test_every_public_name_resolves_to_corral_code(name: str) -> None:
    value = getattr(corral, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert value.__module__.split(".")[0] == "corral", f"{name} comes from {value.__module__}"
    else:  # a type alias such as the AnyEvent union: it must be defined by one of corral's modules
        assert any(
            getattr(module, name, None) is value
            for module_name, module in sys.modules.items()
            if module_name.startswith("corral.")
        )


def test_all_lists_no_name_twice_and_dir_shows_it() -> None:
    assert len(corral.__all__) == len(set(corral.__all__))
    assert set(corral.__all__) == {"__version__", *corral._EXPORTS}  # the lazy table and __all__ agree
    assert set(corral.__all__) <= set(dir(corral))


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = corral.Nope  # type: ignore[attr-defined]


def test_importing_corral_imports_no_submodule_and_prints_nothing() -> None:
    probe = (
        f"import sys, json; sys.path.insert(0, {str(SRC)!r}); import corral; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('corral.'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout) == []


def test_public_errors_form_one_tree() -> None:
    errors = [getattr(corral, n) for n in corral.__all__ if n.endswith(("Error", "Refused", "Failure"))]
    errors += [corral.RunConflict, corral.SpoolCorrupt, corral.NotFound, corral.RunNotFound]
    assert all(issubclass(e, corral.CorralError) for e in errors)
