# casarray — the two quick-start commands do all set-up themselves:
#   make lab    venv + install + run the lab (3 simulated Exchange servers behind the balancer)
#   make test   venv + install + system packages + lint + types + tests
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian packages the tests and benchmarks drive as real peers.
SYSTEM_PACKAGES := curl haproxy nginx-light wrk chromium chromium-driver dovecot-imapd dovecot-pop3d postfix keepalived netcat-openbsd

.PHONY: lab test lint types unit integration bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; fi; \
	fi

lab: $(STAMP)
	$(VENV)/bin/casarray lab

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

types: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint types
	$(VENV)/bin/pytest -q

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

bench: $(STAMP) system-deps
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache lab-run
