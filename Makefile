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
	@echo "make: installing the test extra (pytest, hypothesis, setuptools, mpi4py and the MPICH wheel, the NVRTC wheels of"
	@echo "      CUDA 12 and 13: 185 MB), PyTorch's CPU build and MMA-Sim (the tests' oracles) and CuPy's API (137 MB)"
	$(PY) -m pip install --quiet -e ".[test]"
	@# PyTorch is only a test oracle and benchmark rival. Its CPU build lies on our dev and CI
	@# machines' disk; PyPI has no "+cpu" build, so elsewhere this fails fast and those tests skip.
	$(PY) -m pip install --quiet "torch==2.13.0+cpu" \
	  || echo "note: PyTorch not installed offline; PyTorch-oracle tests will be skipped"
	@# MMA-Sim, the tests' bit-exact model of the tensor cores (tests/test_tensor_core.py). It
	@# requires torch, which must never come from PyPI: so --no-deps, only where torch is here,
	@# with its other needs: ninja (torch builds its C++ helper on import) and setuptools (above).
	$(PY) -c "import torch" 2>/dev/null \
	  && $(PY) -m pip install --quiet --no-deps "mmasim==2.1.1" "ninja==1.13.2" \
	  || echo "note: MMA-Sim not installed (no PyTorch, or offline); tests/test_tensor_core.py will be skipped"
	@# CuPy's API (137 MB wheel), which tests/test_emulated_array.py checks the emulated CUDA path's
	@# names against: it imports without a GPU or driver. In a folder of its own, off the suite's
	@# path: the other tests run as where CuPy is absent, and a GPU user's CuPy is left alone.
	$(PY) -m pip install --quiet --upgrade --no-deps --target $(VENV)/cupy-api \
	  "cupy-cuda12x==14.2.0" "cuda-pathfinder>=1.3.4,<2"
	touch $(TEST_STAMP)

train: $(TRAIN_STAMP)
	$(PY) -m gpucnn.train $(ARGS)

# The emulator's share of the suite runs twice: as is, then in its checking mode, where any
# out-of-bounds access, race, uninitialized read or barrier misuse in our kernels fails it.
SANITIZED := -k "cuda-emulator or test_cuda_kernels"

test: $(TEST_STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)
	GPUCNN_EMULATOR_SANITIZE=1 $(PY) -m pytest -q -ra $(SANITIZED) $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(PY) -m gpucnn.bench $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info runs
