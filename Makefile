# The README's two set-up commands: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: train test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@# PyTorch is only a test oracle and benchmark rival. Its CPU build lies on our dev and CI
	@# machines' disk; PyPI has no "+cpu" build, so elsewhere this fails fast and those tests skip.
	$(PY) -m pip install --quiet "torch==2.13.0+cpu" \
	  || echo "note: PyTorch not installed offline; PyTorch-oracle tests will be skipped"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m gpucnn.train $(ARGS)

# The emulator's share of the suite runs twice: as is, then in its checking mode, where any
# out-of-bounds access, race, uninitialized read or barrier misuse in our kernels fails it.
SANITIZED := -k "cuda-emulator or test_cuda_kernels"

test: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)
	GPUCNN_EMULATOR_SANITIZE=1 $(PY) -m pytest -q -ra $(SANITIZED) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m gpucnn.bench $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info runs
