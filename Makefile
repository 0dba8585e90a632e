# One entry point for people and CI: `make run` serves, `make test` tests.
# Both install what they need: a virtualenv in .venv and the pinned Claude
# Code CLI in .tools (from npm).
PYTHON ?= python3
CLAUDE_CODE_VERSION ?= 2.1.330
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed .tools/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

.tools/.installed:
	npm install --silent --no-save --no-audit --no-fund --prefix .tools @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	touch $@

run: setup
	$(BIN)/aicli serve

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .tools
