# `make test` and `make demo` each build .venv on a fresh machine (Python 3.11 + pip) and then run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# the fast offline suite (tests marked slow are skipped; `make test-all` runs them too)
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

# demo photos from scikit-image -> train/test split -> train all six models small -> eval on the held-out photos
demo: $(STAMP)
	bash eval/demo.sh

# the quick benchmarks (~15 minutes on a 2-core CPU); eval/bench_train.py, bench_sample.py, bench_sd.py take more options
bench: $(STAMP)
	$(PY) eval/bench_metrics.py
	$(PY) eval/bench_train.py --quick --out eval/results/train_cpu_quick

clean:
	rm -rf $(VENV) demo-out .pytest_cache
