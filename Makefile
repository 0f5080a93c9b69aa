# The two commands of the README: `make demo` runs the demo, `make test` runs the tests.
# Both install what they need on a fresh Debian machine (as root) and are safe to repeat.
VENV ?= .venv
PY := $(VENV)/bin/python
SHELL := /bin/bash

.PHONY: demo test lint bench clean mutation

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	source .ci/services.sh && install_packages demo && start_docker && \
	env -u ANTHROPIC_API_KEY -u ANTHROPIC_BASE_URL -u ANTHROPIC_AUTH_TOKEN $(VENV)/bin/corral demo

# The tests, after the security core's mutation floor (docs/testing.md). MUTATION=0 skips the floor
# for a quick local run; CI never sets it.
MUTATION ?= 1
test: $(VENV)/.installed
	if [ "$(MUTATION)" != 0 ]; then $(PY) tools/mutation.py; fi
	source .ci/services.sh && services_up && \
	CORRAL_REQUIRE_SERVICES=1 $(VENV)/bin/pytest -q -rs $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	source .ci/services.sh && services_up && \
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info

# The mutation score of the security core, per module, against the 90% floor (docs/testing.md).
mutation: $(VENV)/.installed
	$(PY) tools/mutation.py
