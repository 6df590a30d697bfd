# Two commands on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
NGINX := /usr/sbin/nginx

.PHONY: install run test lint bench browser clean chaos FORCE

install: $(STAMP)

# Exactly what uv.lock holds (what CI tested), hashes checked; `--locked` refuses a lock
# that no longer matches pyproject.toml (run `.venv/bin/uv lock` after changing it).
# pip only bootstraps uv, at the version the lock pins (tests/packaging checks they agree).
UV_VERSION := 0.13.9
# The editable install is a tree of links to api/ and auth/ (see [tool.uv] in
# pyproject.toml): a module added or removed there needs a reinstall, edits do not.
MODULES := $(VENV)/.modules

$(MODULES): FORCE
	@mkdir -p $(VENV)
	@find api auth -name '*.py' | sort > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(STAMP): pyproject.toml uv.lock $(MODULES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'
	$(BIN)/uv sync --quiet --locked --extra dev
	touch $(STAMP)

# Development mode: a generated secret (.itemrooms-dev-secret, git-ignored) and
# printed demo links with tokens valid for one hour.
run: install
	ITEMROOMS_ENV=development ITEMROOMS_BACKEND=memory $(BIN)/itemrooms serve --host 127.0.0.1 --port 8000

# The browser tests need Debian's Chromium, the proxy test Debian's nginx; install
# them once if they are missing.
browser:
	@test -x $(CHROMIUM) && test -x $(NGINX) || { \
		echo "installing Debian's chromium and nginx for the browser and proxy tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver nginx >/dev/null; \
	}

test: install browser
	$(BIN)/ruff check api auth tests bench chaos
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check api auth tests bench chaos
	$(BIN)/ruff format --check api auth tests bench chaos
	$(BIN)/mypy

# Every benchmark scenario (about 30 minutes; see bench/README.md): python -m bench,
# then one room shared by two processes on Redis and on PostgreSQL against one memory
# process, then publish throughput per backend. Never part of make test;
# tests/test_bench_smoke.py runs their quick variants.
bench: install
	$(BIN)/uv sync --quiet --locked --extra dev --extra bench
	$(BIN)/python -m bench
	$(BIN)/python -m bench.fanout --scenario shared
	$(BIN)/python -m bench.publishes
	$(BIN)/python -m bench.bigroom

# The fault-injection kit's full runs, on Redis then on PostgreSQL: every fault, three
# processes, network namespaces when run as root (see chaos/README.md). make test runs
# their short runs (tests/chaos/test_short_run.py).
chaos: install
	$(BIN)/python -m chaos --backend redis
	$(BIN)/python -m chaos --backend postgres

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache *.egg-info
