# The two set-up commands of the README:
#   make cifar   -- the main job (three-way CIFAR-10 cross-check)
#   make test    -- the test suite
# Each creates .venv (once) and installs what it needs. torch==2.13.0 goes in first: on the
# project's build machines that spec resolves to a local CPU wheel; any other spec pulls CUDA.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The tutorial's experiment. Real CIFAR-10 comes from DATA (a tfds data_dir holding a prepared
# cifar10, cifar-10-python.tar.gz or an .npz). With DATA empty (the default) the CLI auto-detects:
# $TFDS_DATA_DIR, then ~/tensorflow_datasets, then the download cache, then a download (through
# $HTTPS_PROXY if set); without any it says so within seconds and runs the same cross-check on a
# clearly labelled synthetic stand-in. On the project's build machine the real data sits outside
# the repository: `make cifar DATA=../shared/data/tfds` or `TFDS_DATA_DIR=../shared/data/tfds make cifar`.
DATA ?=
OUT ?= runs/cifar10-sgd
# EXTRA: flags appended to the defaults, e.g. EXTRA="--checkpoint-every 156" (then "... --resume").
EXTRA ?=
CIFAR_ARGS ?= --optimizer sgd --lr 0.01 --batch-size 64 --epochs 20 --out $(OUT) $(if $(DATA),--data $(DATA)) $(EXTRA)

.PHONY: test test-slow cifar lint venv clean

$(STAMP): pyproject.toml setup.py jaxopt_lab/optim/csrc/native.cc
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[lab,test,dev]"
	touch $(STAMP)

venv: $(STAMP)

# The default suite; `make test-slow` runs the tables marked slow (wider sweeps of the same
# claims: every scheduled row, float32 with x64 on past each algorithm's first row, bfloat16 past
# each algorithm's first and weight-decay rows, float16, float64 foreach, L-BFGS bitwise,
# Muon/SparseAdam sweeps). tests/conftest.py gives each xdist worker its own XLA compilation
# cache for the run, so a program compiled twice (another table, a CLI subprocess) compiles once.
# --dist loadgroup keeps each parity row's tests (marked xdist_group) on one worker, which
# computes the row's trajectories once (tests/test_parity.py).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" --durations=25 tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m slow tests

cifar: $(STAMP)
	$(BIN)/python experiments/cifar10.py $(CIFAR_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check jaxopt_lab experiments tests
	$(BIN)/ruff format --check jaxopt_lab experiments tests

clean:
	rm -rf $(VENV)
