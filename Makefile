# The README's two set-up commands: `make train` and `make test`.
# Options reach the programs through ARGS: make train ARGS="--epochs 5 --optimizer adam".
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# make train installs what training needs; make test and make bench add pytest and PyTorch (1.3 GB).
TRAIN_STAMP := $(VENV)/.installed-train
TEST_STAMP  := $(VENV)/.installed-test

.PHONY: train test bench clean

$(PY):
	@echo "make: creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(TRAIN_STAMP): pyproject.toml setup.py | $(PY)
	@echo "make: installing gpucnn (editable) with NumPy, safetensors, tqdm and its train extra:"
	@echo "      scikit-learn (the digits), matplotlib (plots), Pillow (predict); once, a minute or two"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train]"
	touch $(TRAIN_STAMP)

$(TEST_STAMP): $(TRAIN_STAMP)
	@echo "make: installing the test extra (pytest, hypothesis, setuptools, mpi4py and the MPICH wheel) and PyTorch's CPU build, the tests' oracle"
	$(PY) -m pip install --quiet -e ".[test]"
	@# PyTorch is only a test oracle and benchmark rival. Its CPU build lies on our dev and CI
	@# machines' disk; PyPI has no "+cpu" build, so elsewhere this fails fast and those tests skip.
	$(PY) -m pip install --quiet "torch==2.13.0+cpu" \
	  || echo "note: PyTorch not installed offline; PyTorch-oracle tests will be skipped"
	touch $(TEST_STAMP)

train: $(TRAIN_STAMP)
	$(PY) -m gpucnn.train $(ARGS)

# The emulator's share of the suite runs twice: as is, then in its checking mode, where any
# out-of-bounds access, race, uninitialized read or barrier misuse in our kernels fails it.
SANITIZED := -k "(cuda-emulator or test_cuda_kernels) and not nvcc"

test: $(TEST_STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)
	GPUCNN_EMULATOR_SANITIZE=1 $(PY) -m pytest -q -ra $(SANITIZED) $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(PY) -m gpucnn.bench $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info runs
