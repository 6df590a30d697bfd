# Two commands on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: install run test lint bench browser clean chaos

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev,redis]'
	touch $(STAMP)

# Development mode: a generated secret (.itemrooms-dev-secret, git-ignored) and
# printed demo links with tokens valid for one hour.
run: install
	ITEMROOMS_ENV=development ITEMROOMS_BACKEND=memory $(BIN)/itemrooms serve --host 127.0.0.1 --port 8000

# The browser tests need Debian's Chromium; install it once if it is missing.
browser:
	@test -x $(CHROMIUM) || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	}

test: install browser
	$(BIN)/ruff check api auth tests bench chaos
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check api auth tests bench chaos
	$(BIN)/ruff format --check api auth tests bench chaos
	$(BIN)/mypy

# Every benchmark scenario (about 20 minutes; see bench/README.md), the Redis one when
# redis-server is installed. Never part of make test; tests/test_bench_smoke.py runs
# their quick variants.
bench: install
	$(BIN)/python -m pip install --quiet --editable '.[dev,redis,bench]'
	$(BIN)/python -m bench
	@if command -v redis-server >/dev/null; then \
		$(BIN)/python -m bench.fanout --scenario redis; \
	else echo "redis-server not found: the Redis scenario is skipped"; fi

# The fault-injection kit's full run: every fault, three processes, network namespaces
# when run as root (see chaos/README.md). make test runs its short run
# (tests/chaos/test_short_run.py).
chaos: install
	$(BIN)/python -m chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
