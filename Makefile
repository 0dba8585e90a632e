# One entry point for people and CI: `make run` serves, `make test` tests.
# Both install what they need: a virtualenv in .venv and the pinned Claude
# Code CLI in .tools (from npm).
PYTHON ?= python3
# The pinned Claude Code CLI has one source, aicli/actors/claude_bin.py (whose
# install hint names it); `make CLAUDE_CODE_VERSION=x.y.z` tries another.
CLAUDE_CODE_VERSION ?= $(shell sed -n 's/^CLAUDE_CODE_VERSION = "\(.*\)"$$/\1/p' aicli/actors/claude_bin.py)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test bench clean chromium

setup: $(VENV)/.installed .tools/.installed

# aicli/__init__.py holds the version, which the installed metadata copy.
$(VENV)/.installed: setup.cfg pyproject.toml aicli/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

.tools/.installed:
	$(if $(CLAUDE_CODE_VERSION),,$(error No CLAUDE_CODE_VERSION in aicli/actors/claude_bin.py))
	npm install --silent --no-save --no-audit --no-fund --prefix .tools @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	touch $@

run: setup
	$(BIN)/aicli serve

# The browser tests drive Debian's Chromium through Playwright (which cannot
# download a browser here); installed from Debian's packages when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium \
		|| { $(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium; }; }

test: setup chromium
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .tools
