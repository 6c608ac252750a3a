# The two commands README gives a new user. Each builds .venv from nothing but
# Python 3.11: the CPU wheel torch==2.13.0 first (an unpinned torch would pull
# several GB of CUDA packages), then the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?=

.PHONY: quickstart test check lint venv-core venv-test paper paper-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0

venv-core: $(BIN)/python
	$(BIN)/pip install --quiet -e .

venv-test: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"

quickstart: venv-core
	$(BIN)/tms-slt quickstart $(if $(OUT),--out $(OUT),)

test: venv-test
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments
	$(BIN)/python -m pytest

check: test

# paper/: `make paper` rebuilds every figure, table and write-up from the saved results in
# paper/data (no training); `make paper-data` first runs each experiment whose results are
# missing (full mode; an existing result is never overwritten: delete it to rerun).
EXPERIMENTS := elhage2022/superposition_vs_sparsity elhage2022/phase_diagram \
	elhage2022/phase_diagram_3in2 \
	elhage2022/feature_dimensionality chen2023/kgon_table chen2023/bayesian_transitions \
	chen2023/sgd_plateaus chen2023/free_energy_ti swish/swish_vs_relu moving-distribution/tracking

paper-data: venv-core
	@for e in $(EXPERIMENTS); do \
		if [ ! -f paper/data/$$e/results.nc ]; then \
			$(BIN)/python experiments/$$e.py || exit 1; \
		fi; \
	done

paper: venv-core
	$(BIN)/tms-slt figures
