# hesslab — the two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# Pinned CPU wheel so CI never pulls a multi-GB CUDA build; override with `make TORCH=torch==X test`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# one stamp per torch requirement, so `make TORCH=torch==2.14.1 test` installs that torch
STAMP := $(VENV)/.hesslab-installed-$(subst =,,$(subst >,,$(subst <,,$(TORCH))))

.PHONY: setup demo test test-slow test-numerics-alt lint docs bench bench-quick bench-all bench-scale bench-scale-quick peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,hf,lightning,mnist]"
	rm -f $(VENV)/.hesslab-installed*
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/hesslab demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# The numerical tests under a second set of kernels: MKL's SSE4.2 code path, ATen's generic
# (non-SIMD) kernels, one thread. Rounding differs from any AVX2 or AVX-512 machine's, so a
# test that depends on it fails here before it fails on a user's machine (~1 min).
NUMERICS_TESTS := $(addprefix tests/test_,$(addsuffix .py,logdet lanczos power trace density \
	bounds diagonal spectrum_measures operators hessian_modes eigvec_measures distances \
	regularizers))
ALT_NUMERICS := MKL_ENABLE_INSTRUCTIONS=SSE4_2 ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1
test-numerics-alt: $(STAMP)
	env $(ALT_NUMERICS) $(BIN)/python -m pytest $(NUMERICS_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python tools/lint_offenders.py --check

# The documentation site (docs/, mkdocs.yml) into site/; warnings are errors. The API
# reference is read from src/ statically (griffe), so building it imports nothing.
docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

# Peer libraries go into the same .venv without touching its torch (bench/install_peers.sh).
peers: $(STAMP)
	bash bench/install_peers.sh $(VENV)

# hesslab against the peer libraries, side by side (20-30 minutes on 2 cores);
# bench-quick: problem P1 only (~2 min); bench-all: also the product-mode, Lanczos-vs-ARPACK
# and data-parallel benchmarks (about an hour).
bench: peers
	$(BIN)/python bench/peers

bench-quick: peers
	$(BIN)/python bench/peers --quick

# bench-scale: issue 14's table (ResNet-18, ViT-tiny, a 33M GPT-2 against the peers; about
# 30 min on 2 free cores, results/scale.md); bench-scale-quick: small models (minutes).
bench-scale: peers
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python bench/scale.py

bench-scale-quick: peers
	$(BIN)/python bench/scale.py --quick

bench-all: bench
	$(BIN)/python bench/hvp_cost.py
	$(BIN)/python bench/eigen.py
	$(BIN)/python bench/distributed.py

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info .pytest_cache .ruff_cache
