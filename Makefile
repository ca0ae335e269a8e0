# casarray — the two quick-start commands do all set-up themselves:
#   make lab    venv + install casarray (runtime only) + run the lab (3 simulated Exchange servers
#               behind the balancer); it prints commands as .venv/bin/casarray, which works as printed
#   make test   venv + install with the development tools + system packages + lint + types + tests
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
STAMP  := $(VENV)/.installed
# Debian packages the tests and benchmarks drive as real peers.
SYSTEM_PACKAGES := curl haproxy nginx-light wrk chromium chromium-driver dovecot-imapd dovecot-pop3d postfix keepalived netcat-openbsd iproute2 bird2

.PHONY: lab test lint types unit integration bench soak fuzz system-deps clean

# The lab needs only the package and its runtime dependencies; tests, lint and types add the dev tools.
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
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

lab: $(RUNTIME)
	$(VENV)/bin/casarray lab

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench fuzz
	$(VENV)/bin/ruff format --check src tests bench fuzz

types: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint types
	$(VENV)/bin/pytest -q

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

bench: $(STAMP) system-deps
	$(PY) bench/run.py

# Long runs, not part of `make test`.
soak: $(STAMP)
	$(PY) bench/soak.py --minutes 10

# The property tests marked `fuzz` with many more examples, then atheris on the framer where it installs.
fuzz: $(STAMP)
	-$(PY) -m pip install --quiet 'atheris>=2.3'
	$(VENV)/bin/pytest -q -p no:cacheprovider -m fuzz --timeout 3600
	@if $(PY) -c 'import atheris' 2>/dev/null; then \
	  $(PY) fuzz/h1_atheris.py -max_total_time=600 -print_final_stats=1; \
	else echo "atheris does not install here: the coverage-guided pass is skipped"; fi

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache lab-run
