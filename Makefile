# The two README commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Tests run on CPU with 8 fake devices so the data-parallel code is exercised every time.
TEST_ENV := XLA_FLAGS="$${XLA_FLAGS:---xla_force_host_platform_device_count=8}" JAX_PLATFORMS=cpu

.PHONY: demo test test-fast venv lint clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# Two pytest-xdist workers (TEST_WORKERS=0 runs in one process); each test file stays on one
# worker, so module fixtures (the oracle table, the tiny trained model) are built once.
TEST_WORKERS ?= 2
PYTEST_PAR := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# pytest exit 5 (no tests collected) is not a failure of the code; make would turn it into 2.
test: $(VENV)/.installed
	$(TEST_ENV) $(PY) -m pytest -q $(PYTEST_PAR) tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-fast: $(VENV)/.installed
	$(TEST_ENV) $(PY) -m pytest -q $(PYTEST_PAR) -m "not slow" tests

demo: $(VENV)/.installed
	$(PY) -m experiments.demo

lint: $(VENV)/.installed
	$(PY) -m ruff check gudjax configs experiments tests

clean:
	rm -rf $(VENV) .pytest_cache
