# casarray — the two quick-start commands do all set-up themselves:
#   make lab    venv + install casarray (runtime only, its data plane compiled) + run the lab (3 simulated
#               Exchange servers behind the balancer); it prints commands as .venv/bin/casarray, which
#               works as printed
#   make test   venv + install with the development tools + system packages + lint + types + tests
#               (the whole suite on the compiled build, the unit tests once more on the pure one)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
STAMP  := $(VENV)/.installed
# Debian packages the tests and benchmarks drive as real peers.
SYSTEM_PACKAGES := curl haproxy nginx-light wrk chromium chromium-driver dovecot-imapd dovecot-pop3d postfix keepalived netcat-openbsd iproute2 bird2

.PHONY: lab test lint types unit integration bench soak fuzz system-deps clean

# The lab needs only the package and its runtime dependencies; tests, lint and types add the dev tools.
# The install compiles the data plane with mypyc (setup.py, src/casarray/compiled.py), or falls back to
# pure Python with a warning where it cannot; `casarray --version` says which. It is redone whenever a
# source changes, so the compiled modules never lag behind their .py files.
SOURCES := pyproject.toml setup.py $(shell find src/casarray -name '*.py')

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME): $(SOURCES) | $(PY)
	$(PY) -m pip install --quiet -e .
	$(VENV)/bin/casarray --version
	touch $(RUNTIME)

# The dev tools alone: installing '.[dev]' would build (and compile) casarray a second time.
$(STAMP): pyproject.toml | $(RUNTIME)
	$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]))' > $(VENV)/dev-requirements.txt
	$(PY) -m pip install --quiet -r $(VENV)/dev-requirements.txt
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
	$(VENV)/bin/ruff check src tests bench fuzz setup.py
	$(VENV)/bin/ruff format --check src tests bench fuzz setup.py

types: $(STAMP)
	$(VENV)/bin/mypy

# The whole suite against the compiled build (refused if it did not compile: `CASARRAY_PURE=1 make test`
# tests the pure build), the unit tests last, and at the same time once more against the pure modules of
# the same install.
test: $(STAMP) system-deps lint types
	@$(PY) -c 'import os, sys; from casarray import compiled; build = compiled.current(); \
	  sys.exit(None if build.compiled or compiled.pure_requested(os.environ) else \
	  f"make test: the data plane is not compiled ({build.describe()}); pip install -v -e . shows why")'
	$(VENV)/bin/pytest -q --ignore=tests/unit
	@# The unit tests (no timing, no fixed ports) on both builds at once: one core each.
	CASARRAY_PURE=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/unit > $(VENV)/unit-pure.log 2>&1 & pure=$$!; \
	$(VENV)/bin/pytest -q tests/unit; compiled=$$?; \
	wait $$pure; status=$$?; echo "unit tests on the pure build (CASARRAY_PURE=1):"; \
	if [ $$status = 0 ]; then tail -n 1 $(VENV)/unit-pure.log; else cat $(VENV)/unit-pure.log; fi; \
	test $$compiled = 0 && test $$status = 0

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
	find src -name '*.so' -delete
	rm -f src/casarray/compiled.json
