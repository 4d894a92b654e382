# Two entry points for a fresh machine: `make demo` and `make test`. Each sets up its own
# virtualenv (.venv) with the versions pinned in constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Parity-sensitive tests, rerun by CI under torch's generic CPU kernels: a test that leans on one
# machine's float32 bits fails on every machine, not only on another CPU.
KERNEL_TESTS := tests/test_models_onnx.py tests/test_models.py tests/supernet/test_elastic.py \
                tests/parity

.PHONY: venv demo test test-kernels bench study clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools -c constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e ".[test,nni-oracle,ray]"
	$(PY) -m pip install -q -c constraints.txt --no-deps nni
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo-out
	$(VENV)/bin/subnet-export onnx models/demo.py:supernet --arch models/archs/demo.json --out demo-out

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 tests

test-kernels: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -p no:cacheprovider $(KERNEL_TESTS)

bench: $(STAMP)
	$(PY) -m bench

study: $(STAMP)
	$(PY) -m bench.verdict_study

clean:
	rm -rf $(VENV) demo-out
