# make        builds the standalone programs (build/bin/, linked into the repo root as ./flash_attention ...)
# make test   runs ctest (C++ unit tests + every program's --check on the CPU) and then pytest
# make clean  removes build outputs only
#
# The programs come from the same CMake tree that `pip install --no-build-isolation .` builds
# (build/), so kernels compile once. After a plain `pip install .` (build isolation on), that tree
# points at a temporary environment pip has deleted (its nanobind, sometimes its cmake or ninja):
# `make` then configures build/ again (and compiles once more). Knobs: CUATTN_CUDA_ARCHS="90a"
# CUATTN_HEAD_DIMS="128" for a quick development build, CMAKE_ARGS for extra CMake options
# (e.g. -DCUATTN_ENABLE_CUDA=OFF).

PROGRAMS := flash_attention sliding_window_attention paged_attention mla_attention \
            persistent_decode attention_variants
BUILD    ?= build
CMAKE    ?= cmake
PYTHON   ?= python3
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CUATTN_CUDA_ARCHS ?= 80;90a
CUATTN_HEAD_DIMS  ?= 64;96;128;192;256

.PHONY: all programs configure test pytest ctest clean

all: programs

# Without nanobind (no `pip install -r requirements.txt` yet) the tree is configured without the
# Python module; pip's build of the package later turns it on in the same tree.
PYMODULE := $(shell $(PYTHON) -c "import nanobind" >/dev/null 2>&1 && echo ON || echo OFF)

# Ninja when it is on PATH, as pip's build picks it, so both can share the tree.
GENERATOR := $(if $(shell command -v ninja 2>/dev/null),-G Ninja,)

# The cache entries that name files of the environment that configured the tree.
CACHE_PATHS := CMAKE_COMMAND CMAKE_MAKE_PROGRAM Python_EXECUTABLE nanobind_DIR

configure:
	@cache=$(BUILD)/CMakeCache.txt; \
	if [ -f $$cache ]; then \
	  for v in $(CACHE_PATHS); do \
	    p=$$(sed -n "s/^$$v:[A-Z]*=//p" $$cache); \
	    if [ -n "$$p" ] && [ ! -e "$$p" ]; then \
	      echo "make: $(BUILD)/ was configured by an environment that is gone ($$v=$$p; a plain 'pip install .' builds in a temporary one): configuring $(BUILD)/ again"; \
	      rm -rf $$cache $(BUILD)/CMakeFiles; break; \
	    fi; \
	  done; \
	fi; \
	[ -f $$cache ] || $(CMAKE) -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release \
	  -DPython_EXECUTABLE=$$(command -v $(PYTHON)) -DCUATTN_BUILD_PYTHON=$(PYMODULE) \
	  "-DCUATTN_CUDA_ARCHS=$(CUATTN_CUDA_ARCHS)" "-DCUATTN_HEAD_DIMS=$(CUATTN_HEAD_DIMS)" $(CMAKE_ARGS)

programs: configure
	$(CMAKE) --build $(BUILD) -j $(JOBS)
	@for p in $(PROGRAMS); do ln -sf $(BUILD)/bin/$$p $$p; done

ctest: programs
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

pytest:
	$(PYTHON) -m pytest -q tests/python

test: ctest pytest

clean:
	rm -rf $(BUILD)
	rm -f $(PROGRAMS)
