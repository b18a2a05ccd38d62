# Two commands on a fresh machine: `make serve` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install bytecode test test-deps lint typecheck unit soak serve bench bench-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# An editable install leaves our modules uncompiled, and where PYTHONDONTWRITEBYTECODE
# is set (it is on the CI machines) every CLI start compiled them again: 0.25 s of a
# 0.7 s start. compileall only recompiles what changed.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: bytecode
	$(BIN)/pytest -q -x -rs --durations=15

test: test-deps lint typecheck unit

# Debian packages some tests run for real (nginx: tests/test_deploy_doc.py). Installed
# when missing and we are root (CI); otherwise those tests say what is missing and skip.
TEST_DEBS := nginx

test-deps:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEST_DEBS) >/dev/null || \
			{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEST_DEBS) >/dev/null; }; \
		else echo "test-deps: not root, so not installing $(TEST_DEBS): tests that need it skip"; fi; \
	fi

# Longer runs of the SIGKILL and race trials than `make test` affords (13-25 min on
# 2 cores); each prints its seed, which ARTIFACTSTORE_*_SEED replays.
SOAK_ENV := ARTIFACTSTORE_CRASH_TRIALS=150 ARTIFACTSTORE_TIER_CRASH_TRIALS=40 \
	ARTIFACTSTORE_SERVER_CRASH_TRIALS=60 ARTIFACTSTORE_GC_RACE_COMMITS=4000 \
	ARTIFACTSTORE_GC_RACE_PG_COMMITS=1500 ARTIFACTSTORE_REPLICA_ROUNDS=20 \
	ARTIFACTSTORE_STREAM_CRASH_TRIALS=100 ARTIFACTSTORE_BATCH_CRASH_TRIALS=20
soak: bytecode
	$(SOAK_ENV) $(BIN)/pytest -q -s --durations=10 --timeout=3600 tests/test_crash.py tests/test_tier_crash.py \
		tests/controlplane/test_gc_race.py tests/server_fuzz/test_server_crash.py tests/replicas \
		tests/test_stream_nats.py::test_sigkill_at_random_instants_loses_and_repeats_nothing \
		tests/server/test_remote_batches.py::test_sigkill_mid_batch_leaves_no_row_without_its_pack

# `make serve PORT=8123 HOST=0.0.0.0`: set on make's command line. Plain assignments,
# not `?=`, so a HOST or PORT exported by the shell (zsh's host name, a PaaS port)
# cannot move the server without being asked.
HOST = 127.0.0.1
PORT = 8000
serve: bytecode
	$(BIN)/artifactstore serve --host $(HOST) --port $(PORT)

# The peers the benchmarks measure in the same run (Debian packages; needs root).
BENCH_DEBS := restic docker-registry wrk hey

bench-deps:
	@missing=""; for c in restic docker-registry wrk hey; do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BENCH_DEBS); fi

bench: bytecode bench-deps
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/http_large.py
	$(BIN)/python bench/http_small.py
	$(BIN)/python bench/http_load.py
	$(BIN)/python bench/http_rss.py
	$(BIN)/python bench/retention.py
	$(BIN)/python bench/log.py

clean:
	rm -rf $(VENV) build *.egg-info
