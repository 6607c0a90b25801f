# Two commands set everything up on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# dvc stages and papermill kernels must find the project's Python first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test verify lab venv clean-venv

# The exact versions (and their hashes) come from requirements.lock, the environment that
# produced the committed results; the project itself goes on top without touching them.
# After editing pyproject.toml's dependencies, regenerate the lock with the command in its
# header (pip-tools; it keeps the existing pins, `--upgrade` moves them).
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (qnnlib)"
	$(BIN)/pip download --quiet --no-deps --dest $(VENV)/wheels "cffconvert==2.0.0"
	-$(MAKE) --no-print-directory -k git-filters browser-deps
	touch $(STAMP)

venv: $(STAMP)

# REPRO_FLAGS=-f recomputes every stage, even those whose outputs match dvc.lock.
repro: $(STAMP)
	$(BIN)/dvc repro $(REPRO_FLAGS)
	$(BIN)/python -m qnnpipeline.claims_table --update-readme README.md

test: $(STAMP)
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-cpu-targets

# Does this machine regenerate the committed results bit for bit? (README "Reproducibility")
verify: $(STAMP)
	$(BIN)/python -m qnnpipeline.verify

# The kernel, bitpack and deploy tests again under other CPU targets: a true AVX2 CPU
# (the name alone keeps the host's AVX-512, so the features are named too) and a baseline
# x86-64 one (SSE2, no popcnt). Numba caches each target's code separately.
CPU_TARGET_TESTS := tests/test_kernels.py tests/test_ordered.py tests/test_xnor_forward.py tests/test_bitpack.py tests/test_deploy.py \
	tests/test_fused_shift_adamax.py \
	tests/test_hostile_kernels.py tests/test_hostile_deploy.py
AVX2_FEATURES := +64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+xsaveopt,-avx512f,-avx512vpopcntdq,-avx512bw,-avx512vl,-avx512dq,-avx512cd,-avx512bitalg,-avx512vnni,-avx512bf16,-avx512ifma,-avx512vbmi,-avx512vbmi2
GENERIC_FEATURES := +64bit,+cmov,+cx8,+fxsr,+mmx,+sse,+sse2
.PHONY: test-cpu-targets
test-cpu-targets: $(STAMP)
	NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=$(AVX2_FEATURES) $(BIN)/pytest -q -m "not slow" $(CPU_TARGET_TESTS)
	NUMBA_CPU_NAME=generic NUMBA_CPU_FEATURES=$(GENERIC_FEATURES) $(BIN)/pytest -q -m "not slow" $(CPU_TARGET_TESTS)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

# --- The reader's path (README "The notebooks", "How to cite") ----------------------------
.PHONY: book plots browser-deps git-filters
BOOK := book/_build

# The executed notebooks, figures and claims as a static site and a PDF; nothing re-executed.
book: $(STAMP)
	$(BIN)/sphinx-build -q -c book . $(BOOK)/html
	$(BIN)/python book/browser.py $(BOOK)/html $(BOOK)/qnn-replication.pdf
	@echo "site: $(BOOK)/html/index.html   PDF: $(BOOK)/qnn-replication.pdf"

# dvc.yaml's plots as PNG/SVG (Vega bundled by vl-convert): offline, unlike `dvc plots show`.
plots: $(STAMP)
	$(BIN)/python scripts/offline_plots.py --out dvc_plots/offline

# Source notebooks are committed without outputs: nbstripout as a git filter for
# notebooks/*.ipynb only (.gitattributes); cell ids kept. Outside a git checkout: nothing.
git-filters:
	$(BIN)/nbstripout --install --attributes .gitattributes
	git config filter.nbstripout.clean '"$(abspath $(BIN))/python" -m nbstripout --keep-id'

# Debian's Chromium for the browser tests and the book's PDF (needs root and apt-get;
# without it the browser tests skip, saying why).
browser-deps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "browser-deps: could not install chromium (needs root and apt-get); browser tests will skip"

clean-venv:
	rm -rf $(VENV)

# --- GPU (README "On a GPU"): the node's own python3 (torch, CuPy, numba, pandas, pyyaml,
# pytest), the checkout on the path, nothing installed. `make gpu-data` first, on a machine
# that has the MNIST mirror ($QNN_DATA_MIRROR): it copies the .gz files to scratch/mirror/mnist.
GPU_PY ?= env PYTHONPATH=. python3
GPU_TRAIN_ARGS ?=
.PHONY: gpu gpu-train gpu-train-full gpu-dry-run gpu-data

gpu-data:
	$(GPU_PY) benchmarks/gpu.py data

gpu:
	$(GPU_PY) -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_kernels.py
	$(GPU_PY) benchmarks/gpu.py bench

# The paper's protocol shortened to one call (a probe picks the epochs; e.g.
# GPU_TRAIN_ARGS="--budget 420" or "--epochs 200"); gpu-train-full resumes the 1000 epochs.
gpu-train:
	$(GPU_PY) benchmarks/gpu.py train $(GPU_TRAIN_ARGS)

gpu-train-full:
	$(GPU_PY) benchmarks/gpu.py train --full $(GPU_TRAIN_ARGS)

gpu-dry-run:
	$(GPU_PY) benchmarks/gpu.py dry-run
