PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-throughput bench-render bench-affnist bench-detection bench-limited-real bench-onednn bench-reliability clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/synthloop demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

bench: bench-throughput bench-render bench-affnist bench-detection bench-limited-real bench-reliability

bench-throughput: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

bench-render: $(STAMP)
	$(BIN)/python benchmarks/render_throughput.py

bench-affnist: $(STAMP)
	$(BIN)/python benchmarks/affnist_efficiency.py
	for seed in 0 1 2; do for method in random terse_paper; do \
	  $(BIN)/python benchmarks/affnist_error.py --schedule short --method $$method --seed $$seed --threads 1 || exit 1; \
	done; done
	$(BIN)/python benchmarks/affnist_error.py --schedule short --summarise

bench-detection: $(STAMP)
	$(BIN)/python benchmarks/detection.py

bench-limited-real: $(STAMP)
	$(BIN)/python benchmarks/limited_real.py

bench-onednn: $(STAMP)
	$(BIN)/python benchmarks/onednn_repro.py

bench-reliability: $(STAMP)
	$(BIN)/python benchmarks/onednn_repro.py --trials 3
	$(BIN)/python benchmarks/reliability_fuzz.py
	$(BIN)/python benchmarks/reliability.py

clean:
	rm -rf runs .pytest_cache
