# Two commands on a fresh machine: `make serve` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck unit serve bench bench-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -x --durations=15

test: lint typecheck unit

serve: $(STAMP)
	$(BIN)/artifactstore serve --host 127.0.0.1 --port 8000

# The peers the benchmarks measure in the same run (Debian packages; needs root).
BENCH_DEBS := restic docker-registry wrk hey

bench-deps:
	@missing=""; for c in restic docker-registry wrk hey; do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BENCH_DEBS); fi

bench: $(STAMP) bench-deps
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/http.py
	$(BIN)/python bench/retention.py

clean:
	rm -rf $(VENV) build *.egg-info
