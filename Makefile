# Set-up and everyday commands. `make demo` and `make test` are all a fresh
# clone needs: each creates .venv and installs the package with its extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-sdk-oldest demo bench lint venv clean jaeger jaeger-stop

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# `make test` runs against the newest OpenTelemetry SDK pip resolves; this runs the
# suite again against the oldest one pyproject.toml supports, in its own venv.
SDK_OLDEST ?= 1.25.0
OLDEST_VENV := .venv-sdk-$(SDK_OLDEST)
OLDEST_STAMP := $(OLDEST_VENV)/.installed

$(OLDEST_STAMP): pyproject.toml
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -e '.[test-core]' \
		'opentelemetry-api==$(SDK_OLDEST)' 'opentelemetry-sdk==$(SDK_OLDEST)' 'opentelemetry-exporter-otlp==$(SDK_OLDEST)'
	touch $(OLDEST_STAMP)

# Deselected there: the gRPC exporter of 1.25 retries a refused connection past the export
# timeout without saying why; `spanjournal export` still ends at its own deadline with one line,
# but that line says "no complete answer within Ns", not "connection refused".
test-sdk-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pytest \
		--deselect 'tests/test_export.py::test_unreachable_backend_is_one_clear_line_and_exit_1_in_bounded_time[grpc]'

test: $(STAMP)
	$(PY) -m pytest

# The demo's run directory is kept (try the commands it prints there); the next
# `make demo` replaces it, `make clean` removes it.
DEMO_DIR ?= demo-run

demo: $(STAMP)
	$(PY) examples/demo.py --dir $(DEMO_DIR) --replace

bench: $(STAMP)
	$(PY) benchmarks/run.py

# Jaeger v2 without Docker: built from source with Go the first time (cached in
# ~/.cache/spanjournal-jaeger), started in the background; prints the UI address.
jaeger:
	bash collector-config/jaeger.sh start

jaeger-stop:
	bash collector-config/jaeger.sh stop

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .venv-sdk-* .pytest_cache .mypy_cache .ruff_cache build src/spanjournal/*.so src/*.egg-info demo-run
