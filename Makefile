# One entry point for people and CI: `make run` serves, `make test` tests.
# Both install what they need: a virtualenv in .venv and the pinned Claude
# Code CLI and Anthropic's sandbox runtime (srt) in .tools (from npm), and
# the Debian packages the sandbox runs on (bubblewrap, socat, ripgrep).
PYTHON ?= python3
# The pinned Claude Code CLI has one source, aicli/actors/claude_bin.py (whose
# install hint names it); `make CLAUDE_CODE_VERSION=x.y.z` tries another.
CLAUDE_CODE_VERSION ?= $(shell sed -n 's/^CLAUDE_CODE_VERSION = "\(.*\)"$$/\1/p' aicli/actors/claude_bin.py)
# The sandbox runtime's pin has one source too, aicli/actors/sandbox.py.
SANDBOX_RUNTIME_VERSION ?= $(shell sed -n 's/^SANDBOX_RUNTIME_VERSION = "\(.*\)"$$/\1/p' aicli/actors/sandbox.py)
TOOLS_STAMP := .tools/.installed-$(CLAUDE_CODE_VERSION)-$(SANDBOX_RUNTIME_VERSION)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test bench clean chromium sandbox-deps

setup: $(VENV)/.installed $(TOOLS_STAMP) sandbox-deps

# aicli/__init__.py holds the version, which the installed metadata copy.
$(VENV)/.installed: setup.cfg pyproject.toml aicli/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# One npm line for both: a second `npm install --no-save` would prune the first.
$(TOOLS_STAMP):
	$(if $(CLAUDE_CODE_VERSION),,$(error No CLAUDE_CODE_VERSION in aicli/actors/claude_bin.py))
	$(if $(SANDBOX_RUNTIME_VERSION),,$(error No SANDBOX_RUNTIME_VERSION in aicli/actors/sandbox.py))
	npm install --silent --no-save --no-audit --no-fund --prefix .tools \
		@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) \
		@anthropic-ai/sandbox-runtime@$(SANDBOX_RUNTIME_VERSION)
	rm -f .tools/.installed*
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

# What srt runs sessions on under Linux; from Debian's packages when missing.
sandbox-deps:
	@if [ "$$(uname -s)" = Linux ] && { ! command -v bwrap || ! command -v socat \
		|| ! command -v rg; } >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends \
			bubblewrap socat ripgrep \
		|| { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get \
			install -y --no-install-recommends bubblewrap socat ripgrep; }; fi

# The tests share nothing (ports, directories, databases, processes), so they run on
# two workers (pytest-xdist), a module at a time each (loadfile: a module's shared
# fixtures, a browser, a database, the fencing tests' cluster, start once), in file order
# (no reorder by test count, which would leave the long one- and two-test modules for
# last; xdist_group marks do nothing under pytest 9). `make TEST_WORKERS=0 test`: in-process.
TEST_WORKERS ?= 2
test: setup chromium
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The read path's load generator is Debian's wrk (a Python one saturates first on 2 cores);
# installed when missing, as chromium is. BENCH_ARGS passes options, e.g. --ref main.
bench: setup
	@command -v wrk >/dev/null 2>&1 || { \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends wrk \
		|| { $(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends wrk; }; }
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .tools
