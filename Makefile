# ust — the two set-up commands of the README, and the benchmarks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY)
	$(PY) -m pip install -q -e '.[test,analysis]'

# Trace examples/webapp.py with the embedded session and print the trace.
demo: venv
	$(PY) examples/demo.py out/demo-trace

# Install what the tests need (Debian's babeltrace2 when missing) and run them.
test: venv
	sh scripts/ensure-system-deps.sh
	$(PY) -m pytest -q -p no:cacheprovider --basetemp=$(CURDIR)/.pytest-tmp tests

bench: venv
	sh scripts/ensure-system-deps.sh
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/bench_core.py
	@for b in bench/bench_reader.py bench/bench_daemon.py bench/bench_consumer.py bench/bench_probes.py bench/bench_kernel.py bench/bench_relay.py bench/bench_live.py bench/bench_triggers.py bench/bench_shm_path.py; do \
		if [ -f $$b ]; then $(PY) $$b || exit 1; fi; done

clean:
	rm -rf $(VENV) build out .pytest-tmp src/*.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
